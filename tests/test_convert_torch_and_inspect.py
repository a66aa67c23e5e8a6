"""`porting convert torch` (seed 000: weights for tch-rs/candle) and `porting inspect`."""
from __future__ import annotations

import json

import torch
from safetensors import safe_open
from safetensors.torch import load_file

from porting_cli import main
from tests.helpers import model_dir


def bert_like():
    emb = torch.randn(50, 8)
    return {
        "bert.embeddings.word_embeddings.weight": emb,
        "bert.encoder.layer.0.attention.self.query.weight": torch.randn(8, 8).t(),  # not contiguous
        "bert.encoder.layer.0.attention.self.query.bias": torch.randn(8),
        "cls.predictions.decoder.weight": emb,                                      # tied: same storage
        "position_ids": torch.arange(16).unsqueeze(0),
    }


def test_torch_pickle_to_safetensors(tmp_path):
    state = bert_like()
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert main(["convert", "torch", "--in", str(tmp_path / "pytorch_model.bin"), "--out", str(tmp_path / "m.safetensors")]) == 0
    back = load_file(str(tmp_path / "m.safetensors"))
    assert "cls.predictions.decoder.weight" not in back
    for k in back:
        assert torch.equal(back[k], state[k]) and back[k].is_contiguous()
    with safe_open(str(tmp_path / "m.safetensors"), "pt") as f:
        ties = json.loads(f.metadata()["porting.ties"])
        assert ties == {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
    # no overwrite without --force
    assert main(["convert", "torch", "--in", str(tmp_path / "pytorch_model.bin"), "--out", str(tmp_path / "m.safetensors")]) == 1


def test_a_fairseq_checkpoint_is_named_and_tied_as_convert_fairseq_does(tmp_path):
    """convert torch on a fairseq checkpoint: the `model.` prefix, the same canonical name for each
    tie group and the same metadata key as convert fairseq (issue 19, item 14)."""
    src = model_dir("ende-joined") / "model.pt"
    assert main(["convert", "torch", "--input", str(src), "--out", str(tmp_path / "t.safetensors")]) == 0
    assert main(["convert", "fairseq", "--checkpoint", str(src), "--data-dir", str(src.parent),
                 "--out", str(tmp_path / "f"), "-q"]) == 0
    with safe_open(str(tmp_path / "t.safetensors"), "pt") as t, safe_open(str(tmp_path / "f" / "model.safetensors"), "pt") as f:
        assert all(k.startswith("model.") for k in t.keys())
        assert json.loads(t.metadata()["porting.ties"]) == json.loads(f.metadata()["porting.ties"])
        # convert fairseq adds the sinusoidal tables and drops fairseq's version counters; the rest is the same
        derived = {k for k in f.keys() if k.endswith("embed_positions.weight")}
        assert set(f.keys()) - derived <= set(t.keys())
        assert {k for k in set(t.keys()) - set(f.keys())} == {"model.encoder.version", "model.decoder.version"}
        for k in set(f.keys()) - derived:
            assert torch.equal(t.get_tensor(k), f.get_tensor(k)), k


def test_inspect_checkpoint_and_directory(tmp_path, capsys):
    assert main(["inspect", str(model_dir("ende-joined") / "model.pt"), "--summary"]) == 0
    out = capsys.readouterr().out
    assert "model:" in out and "last_optimizer_state:" in out and "total:" in out
    torch.save(bert_like(), tmp_path / "b.bin")
    assert main(["convert", "torch", "--in", str(tmp_path / "b.bin"), "--out", str(tmp_path / "b.safetensors")]) == 0
    capsys.readouterr()
    assert main(["inspect", str(tmp_path / "b.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "bert.embeddings.word_embeddings.weight" in out and "[50, 8]" in out and "total: 4 tensors" in out
    assert main(["inspect", str(tmp_path / "missing.pt")]) == 1
