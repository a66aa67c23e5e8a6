"""Bad input: a clear error listing every problem, a non-zero exit, and nothing written."""
from __future__ import annotations

import logging
import os
import shutil

import pytest
import torch

from converters.fairseq.convert import ConversionError, convert
from converters.io.checkpoint import UnsafeCheckpoint, load_untrusted
from tests.helpers import convert_cli, model_dir, trusted_load

SEP, JOINED = model_dir("ende-sep"), model_dir("ende-joined")


class Payload:
    """Unpickling this runs a shell command: what a malicious checkpoint would carry."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def malicious(tmp_path):
    marker = tmp_path / "payload-ran"
    state = trusted_load(SEP / "model2.pt")
    state["extra_state"] = {"innocent": Payload(marker)}
    path = tmp_path / "model.pt"
    torch.save(state, path)
    return path, marker


def test_code_execution_payload_is_refused_and_never_runs(malicious, tmp_path, capsys):
    path, marker = malicious
    with pytest.raises(UnsafeCheckpoint, match="allowlist"):
        load_untrusted(path)
    assert convert_cli("--checkpoint", path, "--data-dir", SEP, "--out", tmp_path / "out") == 1
    assert "refused" in capsys.readouterr().err
    assert not marker.exists(), "the pickled payload ran"
    assert not (tmp_path / "out").exists()


def test_every_problem_reported_at_once(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(JOINED / "dict.en.txt", data / "dict.en.txt")  # the joined model's dictionaries
    shutil.copy(JOINED / "dict.de.txt", data / "dict.de.txt")
    # no bpecodes at all
    rc = convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", data, "--out", tmp_path / "out")
    err = capsys.readouterr().err
    assert rc == 1 and not (tmp_path / "out").exists()
    assert "bpecodes: missing" in err
    assert "encoder.embed_tokens.weight has" in err and "decoder.embed_tokens.weight has" in err
    assert "nothing written" in err


def test_mapping_problems_collected(tmp_path):
    state = trusted_load(SEP / "model2.pt")
    model = state["model"]
    model["encoder.layers.0.fc1.weight"] = model["encoder.layers.0.fc1.weight"][:, :-1]   # wrong shape
    del model["decoder.layers.1.fc2.bias"]                                              # missing
    model["decoder.layers.0.mystery.weight"] = torch.zeros(3)                           # unexpected
    bad = tmp_path / "model.pt"
    torch.save(state, bad)
    with pytest.raises(ConversionError) as e:
        convert([bad], SEP, tmp_path / "out")
    text = str(e.value)
    assert "encoder.layers.0.fc1.weight has shape" in text
    assert "missing tensor decoder.layers.1.fc2.bias" in text
    assert "unexpected tensor decoder.layers.0.mystery.weight" in text
    assert len(e.value.problems) == 3 and not (tmp_path / "out").exists()


def test_unsupported_options_all_listed(tmp_path):
    state = trusted_load(SEP / "model2.pt")
    args = state["cfg"]["model"]
    args.activation_fn, args.adaptive_softmax_cutoff, args.cross_self_attention = "swish", "100,200", True
    bad = tmp_path / "model.pt"
    torch.save(state, bad)
    with pytest.raises(ConversionError) as e:
        convert([bad], SEP, tmp_path / "out")
    text = str(e.value)
    assert "activation_fn 'swish'" in text and "adaptive softmax" in text and "cross+self attention" in text


def test_existing_output_needs_force(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", out) == 1
    assert (out / "keep.txt").read_text() == "precious"
    # a failing conversion with --force leaves the old output as it was
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", JOINED, "--out", out, "--force") == 1
    assert (out / "keep.txt").read_text() == "precious"
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", out, "--force") == 0
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries left behind


def test_wrong_bpe_codes_warned(tmp_path, caplog):
    """Codes from another model (the wmt19 en-ru archive shipped the en-de ones) still load; the
    converter measures how many dictionary pieces the codes can produce and warns."""
    data = tmp_path / "data"
    data.mkdir()
    for f in ("dict.en.txt", "dict.de.txt"):
        shutil.copy(SEP / f, data / f)
    # another model's codes: the same merges over a shifted alphabet
    codes = (SEP / "bpecodes").read_text(encoding="utf-8").replace("</w>", "\0")
    shifted = "".join(chr(ord(c) + 1) if c.isalpha() else c for c in codes).replace("\0", "</w>")
    (data / "bpecodes").write_text(shifted, encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        prov = convert([SEP / "model2.pt"], data, tmp_path / "out")
    assert any("fit dict.en.txt poorly" in w for w in prov["warnings"])
    assert "fit dict.de.txt poorly" in caplog.text
    clean = convert([SEP / "model2.pt"], SEP, tmp_path / "clean")
    assert clean["warnings"] == []


def test_missing_checkpoint_and_bad_dtype(tmp_path, capsys):
    rc = convert_cli("--checkpoint", tmp_path / "nope.pt", "--data-dir", tmp_path / "nodir", "--out", tmp_path / "o")
    err = capsys.readouterr().err
    assert rc == 1 and "nope.pt: no such file" in err and "not a directory" in err
