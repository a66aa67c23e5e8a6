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


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def run(args) -> int:
    from converters.io.checkpoint import CheckpointError
    from converters.io.listing import entries

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
