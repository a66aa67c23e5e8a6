"""The native port against live fairseq on checkpoints it has never seen: every architecture
variant fairseq-train writes here, every recorded setting, and generated tokenizer inputs."""
from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parity.settings import SETTINGS
from porting.generation.beam import generate
from porting.generation.ensemble import KERNELS, Ensemble
from porting.generation.options import GenerationOptions
from porting.model.load import load_ensemble
from porting.tokenizer import Tokenizer
from tests.conftest import requires_fairseq
from tests.fairseq_models import VARIANTS, build
from tests.helpers import convert_cli, same_up_to_ties

pytestmark = requires_fairseq
LINES = 40


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    from parity.fairseq_hub import load_hub

    src = build(request.param)
    out = tmp_path_factory.mktemp(request.param) / "out"
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", out) == 0
    torch.set_num_threads(1)
    return load_hub(src, "model.pt", "en", "de"), Ensemble(load_ensemble(out)[1], kernels="exact"), out


def side_by_side(hub, ensemble, setting, alone=False, fairseq_alone=False, max_len_from="batch-width"):
    """(line, port hypotheses, fairseq hypotheses) for the first LINES test lines, in fairseq's
    batches, or each line alone (``alone``); fairseq's in its batches, or each line alone (``fairseq_alone``)."""
    from parity import shipped

    options = dict(SETTINGS[setting])
    toks = [hub.encode(line) for line in shipped.test_set()[0][:LINES]]
    beam = options.pop("beam")
    theirs = ([hub.generate([t], beam=beam, **options)[0] for t in toks] if fairseq_alone else
              hub.generate(toks, beam=beam, **options))
    # fairseq's own rules, bug for bug: its inert n-gram blocker and its cap from the batch's width
    opts = GenerationOptions(beam=beam, **options, ngram_blocking="fairseq", max_len_from=max_len_from)
    batches = ([([i], src[None]) for i, src in enumerate(toks)] if alone else
               [(b["id"].tolist(), b["net_input"]["src_tokens"]) for b in hub._build_batches(toks, False)])
    for ids, src_tokens in batches:
        for i, hyps in zip(ids, generate(ensemble, src_tokens, opts)):
            yield i, hyps, theirs[i]


def as_reference(theirs) -> list[dict]:
    """fairseq's hypotheses as ``same_up_to_ties`` reads them."""
    return [{"tokens": t["tokens"].tolist(), "score": float(t["score"])} for t in theirs]


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_generation_matches_live_fairseq(pair, setting, kernels):
    hub, exact, out = pair
    ensemble = exact if kernels == "exact" else Ensemble(load_ensemble(out)[1], kernels=kernels)
    for i, hyps, theirs in side_by_side(hub, ensemble, setting):
        if kernels == "exact":
            assert [h.tokens for h in hyps] == [t["tokens"].tolist() for t in theirs], f"line {i}"
            for h, t in zip(hyps, theirs):
                # same machine, same threads, same kernels in the same order: exactly equal
                assert h.score == float(t["score"])
                assert h.positional_scores == t["positional_scores"].tolist()
        else:
            # the same hypotheses (n-best order free only within score ties), scores within 1e-4
            # (observed ~1e-6: float summation order)
            assert same_up_to_ties(hyps, as_reference(theirs), 1e-4), f"line {i}"


def test_few_row_kernels_match_live_fairseq(pair):
    """Each line alone (beam 5: 5 rows), so that every step runs the fast step's few-row path
    (porting/kernels/skinny.c's decoder layers, then porting/kernels/skinny_candidates.c's output step) on
    this architecture: pre-norm, gelu, learned positions, embedding layer norm, untied deep-shallow."""
    from porting.kernels import native

    if not native.available():
        pytest.skip(f"few-row kernels unavailable: {native.unavailable_reason()}")
    hub, _, out = pair
    ensemble = Ensemble(load_ensemble(out)[1], kernels="fast")
    assert all(d.layers_c is not None for d in ensemble.decoders) and ensemble.fuses_candidates()
    for i, hyps, theirs in side_by_side(hub, ensemble, "beam5_nbest5", alone=True):
        assert same_up_to_ties(hyps, as_reference(theirs), 1e-4), f"line {i}"


def test_default_length_cap_is_fairseqs_for_each_line_alone(pair):
    """max_len_a's cap by default takes each sentence's own length, as fairseq documents it: the
    port in fairseq's batches gives what fairseq gives each line decoded alone (where the width is
    the sentence's length), which fairseq's own batches do not."""
    hub, exact, _ = pair
    for i, hyps, theirs in side_by_side(hub, exact, "max_len", fairseq_alone=True, max_len_from="source"):
        assert [h.tokens for h in hyps] == [t["tokens"].tolist() for t in theirs], f"line {i}"


def test_teacher_forced_logits_bitwise(pair):
    hub, ensemble, _ = pair
    src = hub.encode("Click on the arrow of the drop-down list.").unsqueeze(0)
    prev = torch.tensor([[2, 40, 41, 42, 43, 44]])
    with torch.no_grad():
        theirs = hub.models[0](src, torch.tensor([src.shape[1]]), prev)[0]
        ours = ensemble.models[0](src, prev)
    assert torch.equal(theirs, ours)


# ---------------------------------------------------------------- tokenizer, on generated strings

@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    """Tokenization does not depend on the architecture: one model's files are enough."""
    from parity.fairseq_hub import load_hub

    src = build("deep-shallow-untied")
    out = tmp_path_factory.mktemp("tok") / "out"
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", out) == 0
    return load_hub(src, "model.pt", "en", "de"), Tokenizer(out)


WORDS = st.sampled_from(["Click", "don't", "re-open", "e-mail", "&", "<b>", "\"quoted\"", "'", "|", "[x]",
                         "Größe", "Ёлка", "naïve", "3.14", "1,000", "--", "@@", "</w>", "A.B.C.", "...", "«»",
                         "https://x.org/a-b", "%s", "%qD", "C++", "foo_bar", "Ä-Ö", "é", "ß", "日本"])
TEXT = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
    st.lists(WORDS | st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCÄÖÜäöü-'.,:;!?()/", min_size=1, max_size=12),
             max_size=12).map(" ".join),
)


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(TEXT)
def test_encode_matches_fairseq_on_generated_strings(tokenizers, text):
    hub, tok = tokenizers
    assert tok.encode(text) == hub.encode(text).tolist()


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.integers(min_value=3, max_value=6991), max_size=25))
def test_decode_matches_fairseq_on_generated_ids(tokenizers, ids):
    hub, tok = tokenizers
    assert tok.decode(ids + [2]) == hub.decode(torch.tensor(ids + [2]))
