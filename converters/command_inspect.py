"""`porting inspect FILE|DIR`: tensor names, dtypes, shapes and sizes, with totals.

Reads .pt/.bin pickles safely (never executing them) and .safetensors headers (without loading the
data); a converted directory lists every safetensors file in it.
"""
from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path


def add_arguments(p) -> None:
    p.add_argument("path", type=Path, help="a .pt, .bin or .safetensors file, or a converted model directory")
    p.add_argument("--summary", action="store_true", help="totals per top-level group only")


def tensors_of(obj, prefix=""):
    """(name, dtype, shape, bytes) for every tensor in nested dicts/lists (optimizer state included)."""
    import torch

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
        from converters.checkpoint import load_untrusted

        yield from tensors_of(load_untrusted(path))


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def run(args) -> int:
    from converters.checkpoint import CheckpointError

    if not args.path.exists():
        print(f"error: {args.path}: no such file or directory", file=sys.stderr)
        return 1
    try:
        rows = list(entries(args.path))
    except (CheckpointError, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    groups: dict[str, list] = defaultdict(lambda: [0, 0, 0])
    for name, dt, shape, size in rows:
        g = groups[name.split(".", 1)[0]]
        g[0] += 1
        g[1] += size
        n = 1
        for d in shape:
            n *= d
        g[2] += n
    if not args.summary:
        width = max((len(r[0]) for r in rows), default=10)
        for name, dt, shape, size in rows:
            print(f"{name:<{width}}  {dt:<8} {str(list(shape)):<20} {human(size):>10}")
        print()
    for g, (count, size, numel) in groups.items():
        print(f"{g}: {count} tensors, {numel:,} values, {human(size)}")
    print(f"total: {len(rows)} tensors, {sum(r[3] for r in rows):,} bytes ({human(sum(r[3] for r in rows))})")
    return 0
