"""GPT-2's byte-level BPE (the BART family's, fairseq's ``--bpe gpt2``): porting.tokenizer.ByteLevelBPE
gives fairseq's GPT-2 ids on any text, fuzzed against fairseq's own encoder (gpt2_bpe_utils.Encoder)
on a byte-level BPE model trained here (no GPT-2 download: the files have GPT-2's format, made by the
tokenizers library from the shipped texts)."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from parity import shipped
from porting.tokenizer import ByteLevelBPE, gpt2_byte_symbols
from tests.conftest import requires_fairseq

pytestmark = requires_fairseq
VOCAB = 1500


@pytest.fixture(scope="module")
def gpt2_files(tmp_path_factory):
    """encoder.json and vocab.bpe in GPT-2's format, learned from the shipped en/de/fr/es texts."""
    from tokenizers import ByteLevelBPETokenizer

    d = tmp_path_factory.mktemp("gpt2")
    texts = [str(p) for p in sorted(shipped.DATA.glob("valid*")) + sorted(shipped.DATA.glob("test*"))]
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train(texts, vocab_size=VOCAB, min_frequency=2, show_progress=False)
    bpe.save_model(str(d))
    (d / "vocab.json").rename(d / "encoder.json")
    (d / "merges.txt").rename(d / "vocab.bpe")
    return d / "encoder.json", d / "vocab.bpe"


@pytest.fixture(scope="module")
def both(gpt2_files):
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    return ByteLevelBPE.from_files(*gpt2_files), get_encoder(*map(str, gpt2_files))


def test_the_byte_table_is_gpt2s():
    from fairseq.data.encoders.gpt2_bpe_utils import bytes_to_unicode

    assert gpt2_byte_symbols() == bytes_to_unicode() and len(set(gpt2_byte_symbols().values())) == 256


def test_every_shipped_line_gets_fairseqs_ids(both):
    ours, theirs = both
    lines = [line for p in sorted(shipped.DATA.glob("*")) if p.is_file() for line in p.read_text(encoding="utf-8").splitlines()]
    assert len(lines) > 3000
    for line in lines:
        assert ours.encode(line) == theirs.encode(line), line
    assert sum(len(ours.encode(line)) for line in lines) < sum(len(line.encode()) for line in lines) / 2   # merges ran


# What GPT-2's regex treats specially: contractions (case-sensitive), a space before a word, runs of
# whitespace and the last space before a word, other Unicode spaces and line breaks; and what a byte
# level must survive: control characters, emoji sequences, combining marks, other scripts' digits.
SPECIAL = ["it's", "IT'S we'LL you'd", "  two spaces", "end  ", "a\n\nb", "\t\x0b\x0c\r\n x", "\u00a0nbsp\u2028ls\u2029",
           "\x00\x01\x7f\x1b[0m", "👩‍👩‍👧 🇩🇪 ✌🏽", "e\u0301 ñ", "٣٤٥ ๑๒ ४२", "中文 日本語", "a'''b", " ' s", "$1,000.50!!",
           "\ufeffbom", "tab\there", "x" * 300]


@pytest.mark.parametrize("text", SPECIAL)
def test_what_the_regex_treats_specially(both, text):
    ours, theirs = both
    assert ours.encode(text) == theirs.encode(text)
    assert ours.decode(ours.encode(text)) == theirs.decode(theirs.encode(text)) == text


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(st.characters(codec="utf-8"), max_size=40))
@example("\r\n\r\n")
@example(" \U0001f600 ")
def test_any_text(both, text):
    """Any UTF-8 text (surrogates have no UTF-8): the same ids, and decoding gives the text back."""
    ours, theirs = both
    ids = theirs.encode(text)
    assert ours.encode(text) == ids
    assert ours.decode(ids) == text


def test_invalid_utf8_decodes_as_fairseq_does(both):
    """A hypothesis may end inside a character: fairseq replaces the broken bytes (errors="replace")."""
    ours, theirs = both
    ids = theirs.encode("日本")
    assert ours.decode(ids[:-1]) == theirs.decode(ids[:-1])
