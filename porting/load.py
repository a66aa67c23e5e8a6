"""Loading a converted directory into the native model, strictly: every parameter filled from the
file (ties resolved), nothing left over, derived tables checked against our own computation."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from porting.model import Arch, Transformer

PREFIX = "model."


class LoadError(Exception):
    pass


def read_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise LoadError(f"{model_dir}: no config.json (is this a converted model directory?)")
    config = json.loads(path.read_text())
    if "porting" not in config:
        raise LoadError(f"{path}: no `porting` section: convert with `porting convert fairseq`")
    return config


def load_member(model_dir: str | Path, file: str, config: dict | None = None, dtype=torch.float32) -> Transformer:
    model_dir = Path(model_dir)
    config = config or read_config(model_dir)
    p = config["porting"]
    model = Transformer(Arch.from_config(p["architecture"]), config["src_vocab_size"], config["tgt_vocab_size"])
    stored = load_file(str(model_dir / file))
    params = dict(model.named_parameters())
    problems, state = [], {}
    for name in params:
        key = PREFIX + name
        key = p["ties"].get(key, key)
        if key not in stored:
            problems.append(f"{file}: missing {PREFIX + name}")
        elif stored[key].shape != params[name].shape:
            problems.append(f"{file}: {key} has shape {tuple(stored[key].shape)}, the model needs {tuple(params[name].shape)}")
        else:
            state[name] = stored[key]
    used = {p["ties"].get(PREFIX + n, PREFIX + n) for n in params}
    for key in sorted(set(stored) - used):
        if key in p.get("derived", {}):
            side = getattr(model, key.split(".")[1])
            ours = side.sinusoidal
            if stored[key].shape != ours.shape or not torch.allclose(stored[key].float(), ours, atol=1e-6):
                problems.append(f"{file}: derived {key} differs from fairseq's sinusoidal table")
        else:
            problems.append(f"{file}: unexpected tensor {key}")
    if problems:
        raise LoadError("\n".join(problems))
    model.load_state_dict(state, strict=False)  # every parameter was checked above; buffers are ours
    return model.to(dtype).eval()


def load_ensemble(model_dir: str | Path, dtype=torch.float32) -> tuple[dict, list[Transformer]]:
    config = read_config(model_dir)
    return config, [load_member(model_dir, f, config, dtype) for f in config["porting"]["ensemble"]]
