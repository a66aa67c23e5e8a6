"""Nothing silently wrong, round two (issue 30): what a hostile user found accepted, trusted or
answered with a traceback, each now refused, checked or explained in one line."""
from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

from porting_cli import main


def relabel(path: Path, tensor: str, dtype: str) -> None:
    """A safetensors file with one tensor's dtype label changed in its header, its bytes kept."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    header[tensor]["dtype"] = dtype
    text = json.dumps(header).encode()
    text += b" " * (n - len(text)) if len(text) <= n else b""
    path.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + n:])


# ---------------------------------------------------------------- item 3: integer weights

def test_integer_weights_are_refused_by_convert_transformers_and_the_loader(converted, tmp_path, capsys):
    """The same bytes relabelled I32: no longer weights. convert transformers refuses the directory and
    the loader the converted model, each naming the tensor; nothing is written."""
    from porting.model.load import LoadError, load_ensemble

    hub = tmp_path / "hub"
    shutil.copytree(converted["m2m-enfres"], hub)
    config = json.loads((hub / "config.json").read_text())
    del config["porting"]
    (hub / "config.json").write_text(json.dumps(config))
    key = "model.encoder.layers.0.fc1.weight"
    relabel(hub / "model.safetensors", key, "I32")
    assert main(["convert", "transformers", "--model", str(hub), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"{key} is int32, not a float weight" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()

    model = tmp_path / "model"
    shutil.copytree(converted["m2m-enfres"], model)
    relabel(model / "model.safetensors", key, "I32")
    try:
        load_ensemble(model)
    except LoadError as e:
        assert f"{key} is int32" in str(e)
    else:
        raise AssertionError("an integer tensor loaded as a weight")
    (tmp_path / "in.en").write_text("Hello.\n")
    capsys.readouterr()
    assert main(["translate", "--model", str(model), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en")]) == 1
    err = capsys.readouterr().err
    assert f"{key} is int32" in err and "Traceback" not in err


# ---------------------------------------------------------------- item 2: the SentencePiece model the converter would refuse

def test_translate_refuses_the_sentencepiece_model_convert_refuses(converted, tmp_path, capsys):
    """Another SentencePiece model swapped into a converted directory: its pieces are mostly not the
    dictionary's, so every sentence would be <unk>s. Loading checks what conversion checked."""
    from tests.fairseq_models import sentencepiece_files

    model = tmp_path / "model"
    shutil.copytree(converted["m2m-enfres"], model)
    other, _ = sentencepiece_files("bpe")
    shutil.copy(other, model / "sentencepiece.bpe.model")
    (tmp_path / "in.en").write_text("Hello.\n")
    assert main(["translate", "--model", str(model), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en")]) == 1
    err = capsys.readouterr().err
    assert "sentencepiece.bpe.model fits vocab.json poorly" in err and err.count("\n") == 1, err
    # the shipped pair still loads
    assert main(["translate", "--model", str(converted["m2m-enfres"]), "--source-lang", "en", "--target-lang", "fr",
                 "--input", str(tmp_path / "in.en"), "-q"]) == 0
