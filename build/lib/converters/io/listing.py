"""Every tensor of a file or converted directory, named, with its dtype, shape and size: .pt/.bin
pickles read safely (never executed), .safetensors from their headers (no data loaded)."""
from __future__ import annotations

from pathlib import Path

import torch

from converters.io.checkpoint import load_untrusted


def tensors_of(obj, prefix=""):
    """(name, dtype, shape, bytes) for every tensor in nested dicts/lists (optimizer state included)."""
    if isinstance(obj, torch.Tensor):
        yield prefix, str(obj.dtype).removeprefix("torch."), tuple(obj.shape), obj.numel() * obj.element_size()
    elif isinstance(obj, dict):
        for k, v in obj.items():
            yield from tensors_of(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            yield from tensors_of(v, f"{prefix}.{i}" if prefix else str(i))


def safetensors_entries(path: Path):
    from safetensors import safe_open

    sizes = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}
    with safe_open(str(path), framework="pt") as f:
        for name in f.keys():
            s = f.get_slice(name)
            shape = tuple(s.get_shape())
            n = 1
            for d in shape:
                n *= d
            yield name, s.get_dtype(), shape, n * sizes.get(s.get_dtype(), 0)


def entries(path: Path):
    if path.is_dir():
        for f in sorted(path.rglob("*.safetensors")):
            for name, dt, shape, size in safetensors_entries(f):
                yield f"{f.relative_to(path)}:{name}", dt, shape, size
    elif path.suffix == ".safetensors":
        yield from safetensors_entries(path)
    else:
        yield from tensors_of(load_untrusted(path))
