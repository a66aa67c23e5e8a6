"""The multilingual family against live fairseq on checkpoints it has never seen: one tiny
translation_multi_simple_epoch model per way the task places its language tokens (M2M-100's,
NLLB's codes, mBART's style with the tokens replacing </s>, the target's token on the encoder
only), every trained direction, the search settings that touch the start of the output."""
from __future__ import annotations

import pytest
import torch

from parity.settings import SETTINGS
from porting.format import language_tokens, read_config
from porting.generation.beam import generate
from porting.generation.ensemble import KERNELS, Ensemble
from porting.generation.options import GenerationOptions
from porting.model.load import load_ensemble
from porting.tokenizer import open_tokenizer
from tests.conftest import requires_fairseq
from tests.fairseq_models import MULTILINGUAL_VARIANTS, build_multilingual
from tests.helpers import convert_cli, same_up_to_ties

pytestmark = requires_fairseq
LINES = 30
DIRECTIONS = ("en-fr", "fr-en", "en-es")          # the variants' trained directions (in English's codes)
CHECKED = ("beam5_nbest5", "greedy", "lenpen0.6", "min_len", "max_len", "unkpen")


@pytest.fixture(scope="module", params=sorted(MULTILINGUAL_VARIANTS))
def variant(request, tmp_path_factory):
    src = build_multilingual(request.param)
    out = tmp_path_factory.mktemp(request.param) / "out"
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", out) == 0
    torch.set_num_threads(1)
    return request.param, src, out


def codes(name: str, direction: str) -> tuple[str, str]:
    mapping = MULTILINGUAL_VARIANTS[name][1]
    src, tgt = direction.split("-")
    return mapping[src], mapping[tgt]


def lines_of(direction: str) -> list[str]:
    from parity import shipped

    src, tgt = direction.split("-")
    return shipped.test_set(src, tgt)[0][:LINES]


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_tokenizer_and_language_tokens_match_live_fairseq(variant, direction):
    """The encoder's ids (the language token in its place) and the text of fairseq-generate."""
    from parity.fairseq_hub import generate as fairseq_generate
    from parity.fairseq_hub import hypothesis_text, load_hub, model_input

    name, src_dir, out = variant
    src, tgt = codes(name, direction)
    hub = load_hub(src_dir, "model.pt", src, tgt)
    tok = open_tokenizer(out, source_lang=src, target_lang=tgt)
    lines = lines_of(direction)
    for line in lines:
        assert tok.encode(line) == model_input(hub, hub.encode(line)).tolist(), line
    for hyps in fairseq_generate(hub, [hub.encode(line) for line in lines], beam=2):
        pieces, text = hypothesis_text(hub, hyps[0]["tokens"])
        assert (tok.symbols(hyps[0]["tokens"].tolist()), tok.decode(hyps[0]["tokens"].tolist())) == (pieces, text)


@pytest.mark.parametrize("kernels", KERNELS)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_generation_matches_live_fairseq(variant, direction, kernels):
    from parity.fairseq_hub import generate as fairseq_generate
    from parity.fairseq_hub import load_hub

    name, src_dir, out = variant
    src, tgt = codes(name, direction)
    hub = load_hub(src_dir, "model.pt", src, tgt)
    tok = open_tokenizer(out, source_lang=src, target_lang=tgt)
    ensemble = Ensemble(load_ensemble(out)[1], kernels=kernels)
    toks = [hub.encode(line) for line in lines_of(direction)]
    for setting in CHECKED:
        options = dict(SETTINGS[setting])
        beam = options.pop("beam")
        theirs = fairseq_generate(hub, toks, beam=beam, **options)
        opts = GenerationOptions(beam=beam, **options, ngram_blocking="fairseq", max_len_from="batch-width")
        for b in hub._build_batches(toks, False):           # fairseq's batches: its max_len_a cap is theirs
            ours = generate(ensemble, b["net_input"]["src_tokens"], opts, None, (tok.bos, tok.prefix))
            for i, hyps in zip(b["id"].tolist(), ours):
                if kernels == "exact":     # same machine, threads and kernels: exactly equal
                    assert [(h.tokens, h.score, h.positional_scores) for h in hyps] == \
                        [(t["tokens"].tolist(), float(t["score"]), t["positional_scores"].tolist())
                         for t in theirs[i]], f"{setting} line {i}"
                else:
                    reference = [{"tokens": t["tokens"].tolist(), "score": float(t["score"])} for t in theirs[i]]
                    assert same_up_to_ties(hyps, reference, 1e-4), f"{setting} line {i}"


def test_teacher_forced_log_probs_bitwise(variant):
    """The decoder input as the task trains (the start token, the forced language token) gives
    fairseq's log-probs exactly."""
    from parity.fairseq_hub import load_hub, model_input, teacher_forced_target

    name, src_dir, out = variant
    src, tgt = codes(name, "en-fr")
    hub = load_hub(src_dir, "model.pt", src, tgt)
    model = load_ensemble(out)[1][0]
    line, reference = lines_of("en-fr")[0], "Cliquez sur la flèche."
    source = model_input(hub, hub.encode(line))[None]
    target, bos = teacher_forced_target(hub, reference, tgt)
    tok = open_tokenizer(out, source_lang=src, target_lang=tgt)
    assert bos == tok.bos and (not tok.prefix or target[0].item() == tok.prefix[0])
    prev = torch.cat([torch.tensor([bos]), target[:-1]])[None]
    with torch.no_grad():
        theirs = hub.models[0].get_normalized_probs(hub.models[0](source, torch.tensor([source.shape[1]]), prev),
                                                    log_probs=True)
        ours = model.log_probs(model(source, prev))
    assert torch.equal(theirs, ours)


def test_conventions_are_recorded(variant):
    """What the converter wrote is what fairseq's task did: placement, style, token ids."""
    name, src_dir, out = variant
    tokens = language_tokens(read_config(out))
    extra = MULTILINGUAL_VARIANTS[name][0]
    assert tokens.encoder_langtok == extra[extra.index("--encoder-langtok") + 1]
    assert tokens.decoder_langtok == ("--decoder-langtok" in extra)
    assert tokens.replacing_bos_eos == ("--lang-tok-replacing-bos-eos" in extra)
    assert tokens.style == ("mbart" if "mbart" in extra else "multilingual")
    # the tokens follow the data dictionary in --langs order (<mask> after them for mbart)
    data_size = len((src_dir / MULTILINGUAL_VARIANTS[name][2]).read_text(encoding="utf-8").splitlines()) + 4
    assert [tokens.ids[lang] for lang in tokens.langs] == list(range(data_size, data_size + len(tokens.langs)))
