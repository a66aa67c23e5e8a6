"""`porting convert fairseq` on real checkpoints that fairseq wrote here."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from converters.fairseq.dictionary import read_dictionary, to_fsmt_vocab
from tests.helpers import convert_cli, model_dir, trusted_load

SEP, JOINED = model_dir("ende-sep"), model_dir("ende-joined")


@pytest.fixture(scope="module")
def converted_here(tmp_path_factory):
    """The shipped models converted once for this module (directories under one root): single,
    ensemble and the raw training checkpoint. Not the session fixture `converted` (name -> directory)."""
    root = tmp_path_factory.mktemp("converted-here")
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", root / "sep") == 0
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--checkpoint", SEP / "model1.pt",
                       "--data-dir", SEP, "--out", root / "ensemble") == 0
    assert convert_cli("--checkpoint", JOINED / "model.pt", "--data-dir", JOINED, "--out", root / "joined") == 0
    return root


def stored(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def test_separate_dictionaries_layout(converted_here):
    out = converted_here / "sep"
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "model.safetensors", "config.json", "vocab-src.json", "vocab-tgt.json", "merges.txt",
        "tokenizer_config.json", "generation_config.json", "provenance.json", "README.md"])
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["langs"] == ["en", "de"]  # read from the checkpoint: none were given
    assert cfg["porting"]["ties"] == {"model.decoder.output_projection.weight": "model.decoder.embed_tokens.weight"}
    tensors = stored(out / "model.safetensors")
    assert "model.decoder.output_projection.weight" not in tensors  # a tied tensor is stored once
    original = trusted_load(SEP / "model2.pt")["model"]
    for key, value in original.items():
        ours = tensors.get("model." + key)
        if ours is not None:
            assert torch.equal(ours, value), key
    dropped = json.loads((out / "provenance.json").read_text())["members"]["model.safetensors"]["dropped"]
    assert set(original) - {k.removeprefix("model.") for k in tensors} == set(dropped) & set(original)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert json.loads(f.metadata()["porting.ties"]) == cfg["porting"]["ties"]


def test_vocab_ids_are_fairseqs(converted_here):
    cfg = json.loads((converted_here / "sep" / "config.json").read_text())
    for side, lang in (("src", "en"), ("tgt", "de")):
        vocab = json.loads((converted_here / "sep" / f"vocab-{side}.json").read_text())
        d = read_dictionary(SEP / f"dict.{lang}.txt")
        assert vocab == to_fsmt_vocab(d)
        assert len(vocab) == cfg[f"{side}_vocab_size"]
        assert [vocab[s] for s in ("<s>", "<pad>", "</s>", "<unk>")] == [0, 1, 2, 3]


def test_vocab_matches_fairseq_dictionary_class():
    fairseq_dictionary = pytest.importorskip("fairseq.data.dictionary")
    for lang in ("en", "de"):
        theirs = fairseq_dictionary.Dictionary.load(str(SEP / f"dict.{lang}.txt"))
        ours = read_dictionary(SEP / f"dict.{lang}.txt")
        assert ours.symbols == theirs.symbols and ours.indices == theirs.indices


def test_optimizer_state_dropped_and_all_embeddings_shared(converted_here):
    raw = trusted_load(JOINED / "model.pt")
    assert raw["last_optimizer_state"] is not None  # shipped as fairseq-train wrote it
    out = converted_here / "joined"
    prov = json.loads((out / "provenance.json").read_text())["members"]["model.safetensors"]
    assert "last_optimizer_state" in prov["dropped"]
    tensors = stored(out / "model.safetensors")
    assert "model.encoder.embed_tokens.weight" not in tensors
    assert "model.decoder.output_projection.weight" not in tensors
    params = sum(v.numel() for k, v in raw["model"].items() if "embed_tokens" not in k and "output_projection" not in k
                 and not k.endswith("version"))
    params += raw["model"]["decoder.embed_tokens.weight"].numel()
    derived = sum(v.numel() for k, v in tensors.items() if "embed_positions" in k)
    assert sum(v.numel() for v in tensors.values()) == params + derived
    size = (out / "model.safetensors").stat().st_size
    assert size < (JOINED / "model.pt").stat().st_size / 2


def test_ensemble_layout(converted_here):
    out = converted_here / "ensemble"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["porting"]["ensemble"] == ["model.safetensors", "ensemble/model1.safetensors"]
    first, second = stored(out / "model.safetensors"), stored(out / "ensemble" / "model1.safetensors")
    assert first.keys() == second.keys()
    m1 = trusted_load(SEP / "model1.pt")["model"]
    assert torch.equal(second["model.encoder.layers.0.fc1.weight"], m1["encoder.layers.0.fc1.weight"])
    assert not torch.equal(first["model.encoder.layers.0.fc1.weight"], second["model.encoder.layers.0.fc1.weight"])


def test_generation_defaults_are_fairseqs(converted_here):
    gen = json.loads((converted_here / "sep" / "generation_config.json").read_text())
    assert gen["fairseq"] == {"beam": 5, "nbest": 1, "lenpen": 1.0, "unkpen": 0.0, "min_len": 1, "max_len_a": 0.0,
                              "max_len_b": 200, "no_repeat_ngram_size": 0, "early_stopping": "fairseq"}
    assert gen["decoder_start_token_id"] == 2 and gen["early_stopping"] is True


def test_model_card(converted_here):
    card = (converted_here / "sep" / "README.md").read_text()
    assert "en→de" in card and "FSMTForConditionalGeneration" in card
    prov = json.loads((converted_here / "sep" / "provenance.json").read_text())
    for digest in prov["sources"].values():
        assert digest in card


def test_files_are_what_transformers_and_the_hub_write(converted_here, tmp_path):
    """config.json and generation_config.json are byte for byte what transformers' save_pretrained
    writes after loading them; the card is huggingface_hub's ModelCard with its metadata; no file
    names the converting machine's paths (issue 19, item 12)."""
    from huggingface_hub import ModelCard
    from transformers import FSMTConfig, GenerationConfig

    for name in ("sep", "ensemble", "joined"):
        out = converted_here / name
        FSMTConfig.from_pretrained(out).save_pretrained(tmp_path / name)
        GenerationConfig.from_pretrained(out).save_pretrained(tmp_path / name)
        for f in ("config.json", "generation_config.json"):
            assert (out / f).read_bytes() == (tmp_path / name / f).read_bytes(), (name, f)
        config = json.loads((out / "config.json").read_text())
        assert "transformers_version" in config and config["dtype"] == "float32" and "torch_dtype" not in config
        card = ModelCard.load(out / "README.md")
        assert card.data.language == ["en", "de"] and card.data.pipeline_tag == "translation"
        assert card.data.library_name == "transformers" and "model.generate(**batch, num_beams=5" in card.text
        assert "max_length=202" in card.text and "punctuation" in card.text
        for f in ("README.md", "provenance.json", "config.json"):
            text = (out / f).read_text()
            assert str(SEP.resolve().parent) not in text and str(Path.cwd()) not in text, (name, f)
    prov = json.loads((converted_here / "ensemble" / "provenance.json").read_text())
    assert set(prov["sources"]) == {"model2.pt", "model1.pt", "dict.en.txt", "dict.de.txt", "bpecodes"}
    assert "loads only the first" in (converted_here / "ensemble" / "README.md").read_text()
    assert "tie_word_embeddings=False" in (converted_here / "sep" / "README.md").read_text()
    assert "tie_word_embeddings=False" not in (converted_here / "joined" / "README.md").read_text()


def test_license_reaches_the_card(tmp_path):
    from huggingface_hub import ModelCard

    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", tmp_path / "m",
                       "--license", "cc-by-nc-4.0") == 0
    assert ModelCard.load(tmp_path / "m" / "README.md").data.license == "cc-by-nc-4.0"


def test_dtype(tmp_path):
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", tmp_path / "bf16",
                       "--dtype", "bfloat16") == 0
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}


def test_a_stored_position_table_may_differ_by_its_angles_rounding_and_no_more():
    """The stored sinusoidal table is checked against the regenerated one within the rounding of its
    float32 angles (another machine's sin parts by that much: 6.1e-5 measured at 1026 positions
    between MKL's AVX-512 and AVX2 code); a table of another formula is refused."""
    from porting.model.load import _stored_problems, table_tolerance
    from porting.model.positions import sinusoidal_table

    table = sinusoidal_table(1026, 1024, 1)
    key = "model.encoder.embed_positions.weight"
    rounded = table.clone()
    rounded[875] += 6.1e-5                                   # as measured between the two code paths
    assert table_tolerance(table) > 6.1e-5
    assert _stored_problems({key: rounded}, {}, {}, {key: table}, "model.safetensors") == []
    interleaved = torch.stack([table[:, :512], table[:, 512:]], dim=2).reshape(1026, 1024)   # Vaswani's layout
    assert _stored_problems({key: interleaved}, {}, {}, {key: table}, "model.safetensors") == [
        f"model.safetensors: derived {key} differs from fairseq's sinusoidal table"]
