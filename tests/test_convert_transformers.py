"""The converted directory loads in transformers' FSMT and matches fairseq's recorded numbers."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from parity import shipped
from tests.helpers import convert_cli, model_dir

transformers = pytest.importorskip("transformers")
from transformers import FSMTForConditionalGeneration, FSMTTokenizer  # noqa: E402

# fp32 logits of two implementations of the same math: observed ~2e-6; 1e-4 is the bar.
LOGIT_TOL = 1e-4


@pytest.fixture(scope="module", params=[("ende-sep", "model2.pt"), ("ende-joined", "model.pt")], ids=["sep", "joined"])
def fsmt(request, tmp_path_factory):
    name, ckpt = request.param
    out = tmp_path_factory.mktemp(name) / "out"
    assert convert_cli("--checkpoint", model_dir(name) / ckpt, "--data-dir", model_dir(name), "--out", out) == 0
    model, info = FSMTForConditionalGeneration.from_pretrained(out, output_loading_info=True)
    return name, out, model.eval(), info


def test_loads_with_nothing_missing_or_unexpected(fsmt):
    _, _, _, info = fsmt
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]


def test_ties_are_real_in_transformers(fsmt):
    name, out, model, _ = fsmt
    dec = model.model.decoder
    assert dec.output_projection.weight.data_ptr() == dec.embed_tokens.weight.data_ptr()
    shared = model.model.encoder.embed_tokens.weight.data_ptr() == dec.embed_tokens.weight.data_ptr()
    assert shared == (name == "ende-joined")


def test_teacher_forced_logprobs_match_fairseq(fsmt):
    name, _, model, _ = fsmt
    run = shipped.RUNS / name
    recorded = load_file(str(run / "teacher_forced.safetensors"))
    for i in json.loads((run / "teacher_forced.json").read_text())["sentences"]:
        src = recorded[f"s{i}/src_tokens"].unsqueeze(0)
        prev = recorded[f"s{i}/prev_output_tokens"].unsqueeze(0)
        with torch.no_grad():
            # use_cache=False: FSMT applies no causal mask to a multi-token decoder input otherwise
            logits = model(input_ids=src, decoder_input_ids=prev, use_cache=False).logits[0]
        assert (logits - recorded[f"s{i}/decoder.logits"]).abs().max() < LOGIT_TOL
        lprobs = torch.log_softmax(logits, -1)
        assert (lprobs - recorded[f"s{i}/decoder.lprobs"]).abs().max() < LOGIT_TOL


def test_generation_starts_like_fairseq(fsmt):
    name, _, model, _ = fsmt
    inputs = json.loads((shipped.RUNS / name / "inputs.json").read_text())
    greedy = json.loads((shipped.RUNS / name / "generation" / "greedy.json").read_text())["hypotheses"]
    for i in range(10):
        src = torch.tensor([inputs["ids"][i]])
        out = model.generate(src, num_beams=1, do_sample=False, max_new_tokens=3)
        assert out[0, 0].item() == 2  # decoder_start_token_id: fairseq starts from </s>
        assert out[0, 1].item() == greedy[i][0]["tokens"][0]


def test_tokenizer_ids(fsmt):
    """FSMT's tokenizer always normalises punctuation, fairseq's hub does not: ids agree except
    where normalisation changes the text (porting/NOTES.md)."""
    from sacremoses import MosesPunctNormalizer

    name, out, _, _ = fsmt
    tok = FSMTTokenizer.from_pretrained(out)
    inputs = json.loads((shipped.RUNS / name / "inputs.json").read_text())
    norm = MosesPunctNormalizer(lang="en")
    differ = [i for i, (line, ids) in enumerate(zip(inputs["source"], inputs["ids"]))
              if tok(line)["input_ids"] != ids]
    assert all(norm.normalize(inputs["source"][i]) != inputs["source"][i] for i in differ), differ
    assert len(differ) < len(inputs["source"]) * 0.05


def test_an_m2m100_directory_saved_by_transformers_converts_back(converted, tmp_path):
    """The multilingual conversion loaded by M2M100ForConditionalGeneration and M2M100Tokenizer, written
    by their save_pretrained (the shared embedding once, lm_head dropped), its porting section removed as
    a hub download would be: `convert transformers` gives back the same weights, dictionary, language
    tokens and SentencePiece model, and the port translates every test line identically."""
    from transformers import M2M100ForConditionalGeneration, M2M100Tokenizer

    from porting import Translator
    from porting_cli import main

    original, hub = converted["m2m-enfres"], tmp_path / "hub"
    M2M100ForConditionalGeneration.from_pretrained(original).save_pretrained(hub)
    M2M100Tokenizer.from_pretrained(original).save_pretrained(hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"]
    (hub / "config.json").write_text(json.dumps(config))
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "back")]) == 0
    back = tmp_path / "back"
    a, b = load_file(str(original / "model.safetensors")), load_file(str(back / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for name in ("vocab.json", "sentencepiece.bpe.model"):
        assert (original / name).read_bytes() == (back / name).read_bytes(), name
    before, after = (json.loads((d / "config.json").read_text())["porting"] for d in (original, back))
    assert after["family"] == "fairseq-multilingual" and after["architecture"] == before["architecture"]
    assert after["multilingual"] == {**before["multilingual"], "lang_pairs": []}   # not in a transformers directory
    lines = shipped.test_set("en", "fr")[0]
    ours, theirs = (Translator.from_pretrained(d, source_lang="en", target_lang="fr") for d in (original, back))
    assert ours.translate(lines) == theirs.translate(lines)


def test_convert_transformers_refuses_what_it_cannot_read(tmp_path, capsys):
    from porting_cli import main

    (tmp_path / "list").mkdir()
    (tmp_path / "list" / "config.json").write_text("[1, 2]")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text('{"model_type": "bert"}')
    for model, expected in (("list", "not a JSON object"), ("bert", "a 'bert' model"), ("none", "no config.json")):
        assert main(["convert", "transformers", "--model", str(tmp_path / model), "--out", str(tmp_path / "o")]) == 1
        assert expected in capsys.readouterr().err, model
    assert not (tmp_path / "o").exists()
