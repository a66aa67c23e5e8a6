"""Writing safetensors one tensor at a time, and proving the file holds what was meant.

safetensors' own ``save_file`` first turns every tensor into a bytes object and then writes; for a
wmt19-size model that is a second full copy of the weights in memory. The format is a length, a JSON
header and the raw bytes, so we stream tensors straight from the (memory-mapped) checkpoint to disk.
Reading back uses the safetensors library itself.
"""
from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import torch
from safetensors import safe_open

DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
          torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
          torch.bool: "BOOL"}


CHUNK = 1 << 24  # 16 MiB


def _raw(t: torch.Tensor) -> memoryview:
    """The tensor's bytes in C order (little-endian host), without an extra copy when contiguous."""
    t = t.detach().contiguous()
    return memoryview(t.reshape(-1).view(torch.uint8).numpy()) if t.numel() else memoryview(b"")


def write(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, str]:
    """Write `tensors` (in the given order) to `path`; returns each tensor's sha256."""
    header: dict = {"__metadata__": metadata}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in DTYPES:
            raise TypeError(f"{name}: dtype {t.dtype} has no safetensors equivalent")
        size = t.numel() * t.element_size()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)  # the format aligns the data section to 8 bytes
    digests = {}
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for name, t in tensors.items():
            raw = _raw(t)
            digests[name] = hashlib.sha256(raw).hexdigest()
            f.write(raw)
    return digests


def verify(path: str | Path, expected: dict[str, torch.Tensor], metadata: dict[str, str]) -> list[str]:
    """Re-read `path` and compare it bitwise with `expected`; returns the problems found.

    The safetensors library parses the header (names, dtypes, shapes, metadata); the data are read
    back with plain reads, region by region, so the check never holds a second copy of the model.
    """
    problems = []
    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != set(expected):
            problems.append(f"{path}: names differ: missing {sorted(set(expected) - set(f.keys()))}, "
                            f"extra {sorted(set(f.keys()) - set(expected))}")
        if (f.metadata() or {}) != metadata:
            problems.append(f"{path}: metadata differs from what was written")
        for name in set(f.keys()) & set(expected):
            s = f.get_slice(name)
            want = expected[name]
            if list(s.get_shape()) != list(want.shape) or s.get_dtype() != DTYPES[want.dtype]:
                problems.append(f"{path}: {name}: {s.get_dtype()}{s.get_shape()} != {DTYPES[want.dtype]}{list(want.shape)}")
    with open(path, "rb") as fh:
        (n,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(n))
        start = 8 + n
        for name, want in expected.items():
            if name not in header:
                continue
            begin, end = header[name]["data_offsets"]
            raw = _raw(want)
            if end - begin != len(raw):
                problems.append(f"{path}: {name}: {end - begin} bytes on disk, {len(raw)} meant")
                continue
            fh.seek(start + begin)
            for at in range(0, len(raw), CHUNK):  # bounded reads: never a second copy of a large tensor
                if fh.read(min(CHUNK, len(raw) - at)) != raw[at:at + CHUNK]:
                    problems.append(f"{path}: {name}: bytes on disk differ from the tensor meant")
                    break
    return problems
