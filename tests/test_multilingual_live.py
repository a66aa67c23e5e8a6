"""The multilingual family against live fairseq on checkpoints it has never seen: one tiny
translation_multi_simple_epoch model per way the task places its language tokens (M2M-100's,
NLLB's codes, mBART's style with the tokens replacing </s>, the target's token on the encoder
only), every trained direction, the search settings that touch the start of the output."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from parity.settings import SETTINGS
from porting.format import language_tokens, read_config
from porting.generation.beam import generate
from porting.generation.ensemble import KERNELS, Ensemble
from porting.generation.options import GenerationOptions
from porting.model.load import load_ensemble
from porting.tokenizer import open_tokenizer
from tests.conftest import requires_fairseq
from tests.fairseq_models import MULTILINGUAL_VARIANTS, NLLB_CODES, build_multilingual
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


# ---------------------------------------------------------------- NLLB-200's codes: transformers' NllbTokenizer

LOGPROB_TOL = 1e-4   # transformers' M2M100 against fairseq: float32 sums in another order (observed 1.9e-6)


@pytest.fixture(scope="module")
def nllb(tmp_path_factory):
    src = build_multilingual("nllb")
    out = tmp_path_factory.mktemp("nllb") / "out"
    assert convert_cli("--checkpoint", src / "model.pt", "--data-dir", src, "--out", out) == 0
    return src, out


@pytest.mark.parametrize("direction", DIRECTIONS)
def test_nllb_tokenizer_and_m2m100_match_live_fairseq(nllb, direction):
    """An NLLB-coded model (BPE SentencePiece, as NLLB-200's) loads in transformers as NllbTokenizer +
    M2M100ForConditionalGeneration: fairseq's encoder ids, its teacher-forced log-probs within
    LOGPROB_TOL with the target's code forced first, and fairseq's text from decode."""
    from transformers import AutoTokenizer, M2M100ForConditionalGeneration

    from parity.fairseq_hub import hypothesis_text, load_hub, model_input, teacher_forced_target

    src_dir, out = nllb
    src, tgt = codes("nllb", direction)
    hub = load_hub(src_dir, "model.pt", src, tgt)
    hf = AutoTokenizer.from_pretrained(out, src_lang=src, tgt_lang=tgt)
    assert type(hf).__name__ == "NllbTokenizer"
    assert hf.convert_tokens_to_ids(tgt) == open_tokenizer(out, source_lang=src, target_lang=tgt).prefix[0]
    model = M2M100ForConditionalGeneration.from_pretrained(out).eval()
    source_lines, target_lines = (lines[:LINES] for lines in _test_set(direction))
    compared = 0
    for line, reference in zip(source_lines, target_lines):
        source = model_input(hub, hub.encode(line))
        assert hf(line)["input_ids"] == source.tolist(), line
        target, bos = teacher_forced_target(hub, reference, tgt)
        prev = torch.cat([torch.tensor([bos]), target[:-1]])[None]
        with torch.no_grad():
            theirs = hub.models[0].get_normalized_probs(
                hub.models[0](source[None], torch.tensor([len(source)]), prev), log_probs=True)[0]
            logits = model(input_ids=source[None], decoder_input_ids=prev).logits
        assert (torch.log_softmax(logits, -1)[0] - theirs).abs().max() < LOGPROB_TOL, line
        # the reference's ids (the target's code first) back to fairseq-generate's text; the tiny model's own
        # output is too poor to check decoding on. skip_special_tokens drops <unk> where fairseq keeps it
        text = hypothesis_text(hub, target)[1]
        if "<unk>" not in text:
            assert hf.decode(target.tolist(), skip_special_tokens=True) == text
            compared += 1
    assert compared >= LINES // 2


def test_nllb_tokenizer_ids_on_every_shipped_line(nllb):
    """NllbTokenizer's BPE against fairseq's SentencePiece + dictionary on all the shipped
    multilingual lines (800, the texts the BPE model was trained on) in each language."""
    from transformers import AutoTokenizer

    from parity.fairseq_hub import load_hub, model_input
    from tests.fairseq_models import multilingual_texts

    src_dir, out = nllb
    for path in multilingual_texts():
        src = NLLB_CODES[path.suffix[1:]]
        tgt = NLLB_CODES["fr" if src == NLLB_CODES["en"] else "en"]
        hub = load_hub(src_dir, "model.pt", src, tgt)
        hf = AutoTokenizer.from_pretrained(out, src_lang=src, tgt_lang=tgt)
        for line in path.read_text(encoding="utf-8").splitlines():
            assert hf(line)["input_ids"] == model_input(hub, hub.encode(line)).tolist(), (path.name, line)


def _test_set(direction: str) -> tuple[list[str], list[str]]:
    from parity import shipped

    return shipped.test_set(*direction.split("-"))


def test_nllb_card_names_the_nllb_tokenizer(nllb):
    _, out = nllb
    config = read_config(out)
    assert config["porting"]["transformers_compatible"], config["porting"]["transformers_incompatibilities"]
    card = (out / "README.md").read_text(encoding="utf-8")
    fra = language_tokens(config).ids["fra_Latn"]
    assert 'NllbTokenizer.from_pretrained(THIS_DIR, src_lang="eng_Latn")' in card
    assert f'`tok.convert_tokens_to_ids("fra_Latn")`, id {fra}' in card
    # the port reads the same directory unchanged: fairseq's token names in vocab.json's order
    assert json.loads((out / "tokenizer_config.json").read_text(encoding="utf-8"))["tokenizer_class"] == "NllbTokenizer"


def test_nllb_tokenizer_is_flagged_where_it_cannot_express_the_model(nllb, tmp_path):
    """A piece of the SentencePiece model the dictionary lacks: fairseq makes it <unk>, NllbTokenizer's
    BPE cannot, so the model is converted but flagged, with M2M100Tokenizer's config in place."""
    src_dir, _ = nllb
    release = tmp_path / "release"
    shutil.copytree(src_dir, release)
    dictionary = release / "dictionary.txt"
    lines = dictionary.read_text(encoding="utf-8").splitlines()
    piece = lines[-1].split()[0]
    dictionary.write_text("\n".join([*lines[:-1], "not-a-piece 1"]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert convert_cli("--checkpoint", release / "model.pt", "--data-dir", release, "--out", out) == 0
    config = read_config(out)
    assert not config["porting"]["transformers_compatible"]
    [why] = config["porting"]["transformers_incompatibilities"]
    assert "1 of the SentencePiece model's pieces are not in the dictionary" in why and piece in why
    assert not (out / "tokenizer.json").exists()
    assert "cannot run this model faithfully" in (out / "README.md").read_text(encoding="utf-8")


def test_an_nllb_directory_saved_by_transformers_converts_back(nllb, tmp_path, capsys):
    """The NLLB-coded conversion loaded by M2M100ForConditionalGeneration and NllbTokenizer, written by their
    save_pretrained (tokenizer.json, no vocab.json, no SentencePiece model), its porting section removed
    as a hub download would be. Without the SentencePiece model `convert transformers` refuses, saying
    which file to add; with it (the hub's NLLB repositories ship it) it gives back the same weights,
    dictionary and language tokens, and the port translates identically in every direction."""
    from transformers import AutoTokenizer, M2M100ForConditionalGeneration

    from porting import Translator
    from porting_cli import main

    _, original = nllb
    hub = tmp_path / "hub"
    M2M100ForConditionalGeneration.from_pretrained(original).save_pretrained(hub)
    AutoTokenizer.from_pretrained(original).save_pretrained(hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"]
    (hub / "config.json").write_text(json.dumps(config))
    assert not (hub / "sentencepiece.bpe.model").exists() and not (hub / "vocab.json").exists()
    back = tmp_path / "back"
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(back)]) == 1
    assert "no sentencepiece.bpe.model" in capsys.readouterr().err and not back.exists()

    shutil.copy(original / "sentencepiece.bpe.model", hub)
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(back)]) == 0
    a, b = (json.loads((d / "config.json").read_text())["porting"] for d in (original, back))
    assert b["multilingual"] == {**a["multilingual"], "lang_pairs": []}
    assert (original / "vocab.json").read_bytes() == (back / "vocab.json").read_bytes()
    assert b["transformers_compatible"] and (back / "tokenizer.json").is_file()
    x, y = load_file(str(original / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
    for direction in DIRECTIONS:
        src, tgt = codes("nllb", direction)
        lines = _test_set(direction)[0][:LINES]
        ours, theirs = (Translator.from_pretrained(d, source_lang=src, target_lang=tgt) for d in (original, back))
        assert ours.translate(lines) == theirs.translate(lines), direction


def test_a_legacy_nllb_tokenizer_is_refused_by_name(nllb, tmp_path, capsys):
    """legacy_behaviour puts the source's code after </s>: no placement fairseq's task has."""
    from porting_cli import main

    _, original = nllb
    hub = tmp_path / "hub"
    shutil.copytree(original, hub)
    tc = json.loads((hub / "tokenizer_config.json").read_text())
    (hub / "tokenizer_config.json").write_text(json.dumps({**tc, "legacy_behaviour": True}))
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 1
    assert "legacy_behaviour puts the language code after </s>" in capsys.readouterr().err
