"""Any PyTorch pickle (``pytorch_model.bin``, a plain state dict) -> ``model.safetensors``.

For runtimes that read safetensors (tch-rs, candle): tensors made contiguous, tensors that share
storage stored once with the alias recorded in the metadata, the file read back and compared.
Names and ties follow ``convert fairseq``: a fairseq checkpoint's weights are named under
``model.`` (as its ``model`` entry holds them and as ``convert fairseq`` writes them), and the ties
are recorded under the same metadata key (``porting.format.TIES_METADATA``, alias -> canonical).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from converters.io import safetensors_io
from converters.io.atomic import OutputExists, write_file_atomic
from converters.io.checkpoint import CheckpointError, load_untrusted
from porting.format import TIES_METADATA
from porting.model.layout import PREFIX, TIE_CANONICAL


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


def state_of(obj) -> tuple[dict, str]:
    """The state dict inside a loaded pickle, and the prefix its names take.

    fairseq checkpoints hold the weights under ``model`` next to ``args``/``cfg``; their names get
    the ``model.`` prefix, as ``convert fairseq`` writes them (and as transformers' FSMT names them).
    Lightning checkpoints hold them under ``state_dict``; a bare state dict is its own state.
    """
    if not isinstance(obj, dict):
        return {}, ""
    if isinstance(obj.get("model"), dict) and ("args" in obj or "cfg" in obj):
        return obj["model"], PREFIX
    if isinstance(obj.get("state_dict"), dict):
        return obj["state_dict"], ""
    return obj, ""


def store_once(tensors: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors that are the same view of the same storage (tied weights) kept once, made contiguous.

    Returns (kept, alias -> canonical). A group's canonical is the name ``convert fairseq`` stores
    ties under when the group has it (``model.decoder.embed_tokens.weight``), otherwise its first name.
    """
    groups: dict[tuple, list[str]] = {}
    for name, t in tensors.items():
        key = _storage_key(t) if t.numel() else ("empty", name)   # empty tensors share no data
        groups.setdefault(key, []).append(name)
    kept, aliases = {}, {}
    for names in groups.values():
        canonical = PREFIX + TIE_CANONICAL if PREFIX + TIE_CANONICAL in names else names[0]
        kept[canonical] = tensors[canonical].contiguous()
        aliases.update({n: canonical for n in names if n != canonical})
    return kept, aliases


def convert_pickle(src: Path, out: Path, force: bool = False) -> dict:
    try:
        obj = load_untrusted(src)
    except CheckpointError as e:
        raise TorchConversionError(str(e)) from None
    state, prefix = state_of(obj)
    tensors = flatten_state(state, prefix)
    if not tensors:
        raise TorchConversionError(f"{src}: no tensors found")
    kept, aliases = store_once(tensors)
    metadata = {"format": "pt", TIES_METADATA: json.dumps(aliases)}

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
