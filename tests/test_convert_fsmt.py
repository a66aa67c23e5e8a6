"""`porting convert transformers` (issue 16): a transformers FSMT directory, as published on the hub,
read back as the fairseq model it was made from."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from parity import shipped
from porting_cli import main

transformers = pytest.importorskip("transformers")


def hub_copy(converted_dir, dest, pickle: bool = False):
    """What a hub download of our conversion looks like: saved by transformers' own save_pretrained,
    without our `porting` config section or fairseq's generation section."""
    model = transformers.FSMTForConditionalGeneration.from_pretrained(converted_dir)
    model.save_pretrained(dest)
    if pickle:                         # older hub repositories hold a pickled state dict instead
        torch.save(model.state_dict(), dest / "pytorch_model.bin")
        (dest / "model.safetensors").unlink()
    transformers.FSMTTokenizer.from_pretrained(converted_dir).save_pretrained(dest)
    for name, section in (("config.json", "porting"), ("generation_config.json", "fairseq")):
        data = json.loads((dest / name).read_text())
        data.pop(section)
        (dest / name).write_text(json.dumps(data, indent=2))
    return dest


@pytest.mark.parametrize("name", ["ende-sep", "ende-joined"])
def test_round_trip_is_bitwise_and_translates_the_same(converted, name, tmp_path):
    """ours -> transformers save_pretrained -> ours: the same tensors, ties and translations."""
    hf = hub_copy(converted[name], tmp_path / "hf")
    assert main(["convert", "transformers", "--model", str(hf), "--out", str(tmp_path / "back")]) == 0
    a, b = load_file(str(converted[name] / "model.safetensors")), load_file(str(tmp_path / "back" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    config = json.loads((tmp_path / "back" / "config.json").read_text())["porting"]
    assert config == {**json.loads((converted[name] / "config.json").read_text())["porting"]}
    lines = "".join(f"{x}\n" for x in shipped.test_set()[0][:20]).encode()

    def translate(model):
        r = subprocess.run([sys.executable, "-m", "porting_cli", "translate", "--model", str(model)], input=lines,
                           capture_output=True, check=True)
        return r.stdout
    assert translate(tmp_path / "back") == translate(converted[name])
    prov = json.loads((tmp_path / "back" / "provenance.json").read_text())
    assert prov["converted_from"] == "a transformers FSMT directory" and "merges.txt" in prov["sources"]


def test_a_pickled_hub_directory_and_generation_settings(converted, tmp_path):
    hf = hub_copy(converted["ende-sep"], tmp_path / "hf", pickle=True)
    assert (hf / "pytorch_model.bin").is_file() and not (hf / "model.safetensors").exists()
    gen = json.loads((hf / "generation_config.json").read_text())
    gen.update(num_beams=4, length_penalty=0.6, max_length=52)
    (hf / "generation_config.json").write_text(json.dumps(gen))
    assert main(["convert", "transformers", "--model", str(hf), "--out", str(tmp_path / "back")]) == 0
    fairseq = json.loads((tmp_path / "back" / "generation_config.json").read_text())["fairseq"]
    assert (fairseq["beam"], fairseq["lenpen"], fairseq["max_len_b"]) == (4, 0.6, 50)  # max_length counts two more


def test_bad_directories_are_one_clear_error(converted, tmp_path, capsys):
    assert main(["convert", "transformers", "--model", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")]) == 1
    assert "not a transformers directory (no config.json)" in capsys.readouterr().err
    other = hub_copy(converted["ende-sep"], tmp_path / "bert")
    config = json.loads((other / "config.json").read_text())
    (other / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    assert main(["convert", "transformers", "--model", str(other), "--out", str(tmp_path / "o")]) == 1
    assert "a 'bert' model; this reads 'fsmt', 'm2m_100'" in capsys.readouterr().err
    (other / "config.json").write_text(json.dumps(config))
    (other / "merges.txt").unlink()
    assert main(["convert", "transformers", "--model", str(other), "--out", str(tmp_path / "o")]) == 1
    assert "not a transformers FSMT directory (missing merges.txt)" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
