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


def test_existing_output_needs_force_and_force_replaces_only_our_outputs(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", out) == 1
    assert (out / "keep.txt").read_text() == "precious"
    # --force replaces only an earlier output of the workbench: this directory is the user's
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", out, "--force") == 1
    assert "not an output of the workbench" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"
    ours = tmp_path / "ours"
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", ours) == 0
    first = (ours / "model.safetensors").stat().st_ino
    # a failing conversion with --force leaves the old output as it was
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", JOINED, "--out", ours, "--force") == 1
    assert (ours / "model.safetensors").stat().st_ino == first
    assert convert_cli("--checkpoint", SEP / "model2.pt", "--data-dir", SEP, "--out", ours, "--force") == 0
    assert (ours / "model.safetensors").stat().st_ino != first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporaries or locks left behind


def test_force_never_deletes_an_input(tmp_path, capsys):
    """--out naming the data directory (or a directory holding a checkpoint) is refused, --force or
    not: nothing of the inputs is touched."""
    data = tmp_path / "data"
    shutil.copytree(SEP, data)
    before = sorted(p.name for p in data.iterdir())
    assert convert_cli("--checkpoint", data / "model2.pt", "--data-dir", data, "--out", data, "--force") == 1
    assert "holds an input of this run" in capsys.readouterr().err
    assert sorted(p.name for p in data.iterdir()) == before
    assert convert_cli("--checkpoint", data / "model2.pt", "--data-dir", SEP, "--out", tmp_path, "--force") == 1
    assert (data / "model2.pt").exists()


def test_one_writer_per_output(tmp_path):
    """While another process writes OUT, a conversion into OUT is refused at once with a clear
    error (two racing conversions: one wins, the other is told); nothing is replaced."""
    from converters.io.atomic import output_lock

    out = tmp_path / "out"
    with output_lock(out):                       # another writer, as far as the lock can tell
        with pytest.raises(ConversionError, match="another process is writing it"):
            convert([SEP / "model2.pt"], SEP, out)
    assert not out.exists()
    convert([SEP / "model2.pt"], SEP, out)


def test_two_racing_conversions_one_wins(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "porting_cli", "convert", "fairseq", "--checkpoint", str(SEP / "model2.pt"),
           "--data-dir", str(SEP), "--out", str(out)]
    runs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(r.wait(), r.stderr.read()) for r in runs]
    assert sorted(rc for rc, _ in results) == [0, 1]
    loser = next(err for rc, err in results if rc)
    assert "Traceback" not in loser and ("another process is writing" in loser or "exists" in loser)


def test_interrupted_replacements_are_recovered(tmp_path, monkeypatch, caplog):
    """An interrupt between the two renames of a replacement puts the old output back at once; a
    SIGKILL there, or during writing, leaves hidden siblings that the next run repairs or removes."""
    import subprocess
    from pathlib import Path

    out = tmp_path / "out"
    convert([SEP / "model2.pt"], SEP, out)
    first = (out / "model.safetensors").stat().st_ino
    real, calls = Path.rename, []

    def interrupted_second_rename(self, target):
        calls.append(self)
        if len(calls) == 2:                      # out -> .out.old-*, then tmp -> out never happens
            raise KeyboardInterrupt
        return real(self, target)
    monkeypatch.setattr(Path, "rename", interrupted_second_rename)
    with pytest.raises(KeyboardInterrupt):
        convert([SEP / "model2.pt"], SEP, out, force=True)
    monkeypatch.undo()
    assert (out / "model.safetensors").stat().st_ino == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    dead = subprocess.Popen(["true"])
    dead.wait()                                  # a process id that no longer runs
    out.rename(tmp_path / f".out.old-{dead.pid}-x")             # killed between the renames
    (tmp_path / f".out.tmp-{dead.pid}-y").mkdir()                # killed while writing
    with caplog.at_level(logging.WARNING):
        convert([SEP / "model2.pt"], SEP, out, force=True)
    assert "put back the earlier output" in caplog.text and f"left by an interrupted run (process {dead.pid})" in caplog.text
    assert (out / "model.safetensors").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_nonsense_architecture_values_refused(tmp_path):
    """Values that would divide by zero or allocate terabytes later are named at conversion."""
    state = trusted_load(SEP / "model2.pt")
    args = state["cfg"]["model"]
    args.encoder_attention_heads, args.max_source_positions, args.decoder_layers = 0, 10**12, "abc"
    bad = tmp_path / "model.pt"
    torch.save(state, bad)
    with pytest.raises(ConversionError) as e:
        convert([bad], SEP, tmp_path / "out")
    text = str(e.value)
    assert "encoder_attention_heads 0" in text and "max_source_positions 1000000000000" in text
    assert "decoder_layers 'abc': not an int" in text and not (tmp_path / "out").exists()


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


def _with_a_short_record(src, dst):
    """The checkpoint rewritten as a valid zip whose largest storage record holds half its bytes."""
    import zipfile

    with zipfile.ZipFile(src) as z:
        infos = z.infolist()
        victim = max((i for i in infos if "/data/" in i.filename), key=lambda i: i.file_size)
        with zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
            for info in infos:
                data = z.read(info)
                out.writestr(info.filename, data[: len(data) // 2] if info is victim else data)
    return victim.filename


def test_storage_cut_short_inside_a_valid_zip_is_refused(tmp_path, capsys):
    """A memory-mapped load would fill the missing half with the bytes after the record (values up
    to ~1e38 in a tensor, exit 0); the declared sizes are checked against the records first."""
    from porting_cli import main

    short = tmp_path / "model.pt"
    record = _with_a_short_record(SEP / "model2.pt", short)
    key = record.rsplit("/", 1)[-1]
    with pytest.raises(Exception, match=f"storage {key}: record .* holds .* bytes, its tensors need"):
        load_untrusted(short)
    out = tmp_path / "out"
    assert convert_cli("--checkpoint", short, "--data-dir", SEP, "--out", out) == 1
    assert "truncated or corrupt" in capsys.readouterr().err and not out.exists()
    assert main(["inspect", str(short)]) == 1
    assert main(["convert", "torch", "--in", str(short), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert not (tmp_path / "x.safetensors").exists()
    # the same rewrite without the cut loads: the check refuses the cut and nothing else
    import zipfile

    whole = tmp_path / "whole.pt"
    with zipfile.ZipFile(SEP / "model2.pt") as z, zipfile.ZipFile(whole, "w", zipfile.ZIP_STORED) as w:
        for info in z.infolist():
            w.writestr(info.filename, z.read(info))
    assert torch.equal(load_untrusted(whole)["model"]["decoder.embed_tokens.weight"],
                       trusted_load(SEP / "model2.pt")["model"]["decoder.embed_tokens.weight"])
