import pytest

from parity.fairseq_hub import fairseq_available

HAVE_FAIRSEQ = fairseq_available()
requires_fairseq = pytest.mark.skipif(not HAVE_FAIRSEQ, reason="fairseq is not installed here")
