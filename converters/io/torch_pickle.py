"""Any PyTorch pickle (``pytorch_model.bin``, a plain state dict) -> ``model.safetensors``.

For runtimes that read safetensors (tch-rs, candle): tensors made contiguous, tensors that share
storage stored once with the alias recorded in the metadata, the file read back and compared.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from converters.io import safetensors_io
from converters.io.atomic import OutputExists, write_file_atomic
from converters.io.checkpoint import CheckpointError, load_untrusted


class TorchConversionError(Exception):
    pass


def flatten_state(obj: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Nested dicts of tensors -> dotted names (a bare state dict stays as it is)."""
    out = {}
    for k, v in obj.items():
        name = f"{prefix}{k}"
        if isinstance(v, torch.Tensor):
            out[name] = v
        elif isinstance(v, dict):
            out.update(flatten_state(v, name + "."))
    return out


def _storage_key(t: torch.Tensor):
    return (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()), t.dtype)


def convert_pickle(src: Path, out: Path, force: bool = False) -> dict:
    try:
        obj = load_untrusted(src)
    except CheckpointError as e:
        raise TorchConversionError(str(e)) from None
    state = obj.get("state_dict", obj.get("model", obj)) if isinstance(obj, dict) else obj
    tensors = flatten_state(state)
    if not tensors:
        raise TorchConversionError(f"{src}: no tensors found")
    # Tensors that are the same view of the same storage (tied weights) are stored once.
    first: dict = {}
    aliases: dict[str, str] = {}
    kept: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        key = _storage_key(t)
        if t.numel() and key in first:
            aliases[name] = first[key]
        else:
            first.setdefault(key, name)
            kept[name] = t.contiguous()
    metadata = {"format": "pt", "aliases": json.dumps(aliases)}

    def write(tmp: Path) -> None:
        safetensors_io.write(tmp, kept, metadata)
        problems = safetensors_io.verify(tmp, kept, metadata)
        if problems:
            raise TorchConversionError("\n".join(problems))

    try:
        write_file_atomic(out, write, force, inputs=[src])
    except OutputExists as e:
        raise TorchConversionError(str(e)) from None
    return {"tensors": len(kept), "aliases": aliases,
            "bytes": sum(t.numel() * t.element_size() for t in kept.values())}
