"""A sentence's translation does not depend on the sentences that share its batch: the same
hypotheses at batch sizes 1, 7 and 64, for every generation option and both kernel sets. Sharding
(porting.shards) and any --batch-size rely on it. fairseq's own length cap (max_len_a times the
batch's padded width) is the one exception, kept as an explicit option."""
from __future__ import annotations

import pytest

from parity import shipped
from parity.settings import SETTINGS
from porting.translator import Translator
from tests.helpers import same_up_to_ties

BATCH_SIZES = (1, 7, 64)
LINES = 32     # 64 is then "all in one batch"; 7 cuts them into 5 batches
# every option the search has, beyond the recorded settings: transformers' stopping rules (with
# "never", with a length cap from the source: "never" bounds by the maximum length) and fairseq's
# inert n-gram blocker
EXTRA = {"early_true": {"beam": 5, "early_stopping": "true"},
         "early_false": {"beam": 5, "early_stopping": "false", "lenpen": 1.3},
         "ngram_fairseq": {"beam": 5, "no_repeat_ngram_size": 2, "ngram_blocking": "fairseq"},
         "max_len_never": {"beam": 4, "max_len_a": 0.5, "max_len_b": 2, "early_stopping": "never"}}
ALL = {**SETTINGS, **EXTRA}
# the fast kernels' bar against fairseq (README, tests/test_port_reference_runs.py): float
# summation order may differ with the batch's shape, observed ~1e-6
SCORE_TOL = 1e-4


@pytest.fixture(scope="module", params=["fast", "exact"])
def translator(converted, request):
    return Translator.from_pretrained(converted["ende-joined"], kernels=request.param)


@pytest.fixture(scope="module")
def lines():
    return shipped.test_set()[0][:LINES]


def by_batch_size(translator, lines, options) -> dict[int, list]:
    return {b: translator.generate(lines, batch_size=b, **options) for b in BATCH_SIZES}


def assert_invariant(results: dict[int, list], nbest: int) -> None:
    first, *others = BATCH_SIZES
    for b in others:
        for n, (a, c) in enumerate(zip(results[first], results[b]), 1):
            theirs = [{"tokens": h.tokens, "score": h.score} for h in a.hypotheses]
            assert same_up_to_ties(c.hypotheses, theirs, SCORE_TOL), f"line {n}: batch size {b} differs from {first}"
            assert len(c.hypotheses) == nbest


def test_length_cap_alone_does_not_depend_on_the_batch(translator, lines):
    """The option fairseq's rule makes batch-dependent, at the default (each sentence's own length)."""
    assert_invariant(by_batch_size(translator, lines, SETTINGS["max_len"]), 1)


@pytest.mark.slow
@pytest.mark.parametrize("setting", sorted(ALL))
def test_every_option_is_batch_invariant(translator, lines, setting):
    options = ALL[setting]
    assert_invariant(by_batch_size(translator, lines, options), options.get("nbest", 1))


def test_fairseqs_batch_width_rule_depends_on_the_batch_and_is_the_default_alone(converted, lines):
    """--max-len-from batch-width is fairseq's rule: alone, the batch's width is the sentence's
    length, so both rules agree at batch size 1; in batches of 64 the rule lets short sentences run
    longer and some outputs change (the reason it is not the default)."""
    t = Translator.from_pretrained(converted["ende-joined"])
    alone = t.translate(lines, batch_size=1, **SETTINGS["max_len"])
    assert t.translate(lines, batch_size=1, max_len_from="batch-width", **SETTINGS["max_len"]) == alone
    batched = t.translate(lines, batch_size=64, max_len_from="batch-width", **SETTINGS["max_len"])
    assert sum(a != b for a, b in zip(alone, batched)) > 0
