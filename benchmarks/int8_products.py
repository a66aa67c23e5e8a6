"""Where int8 pays: one product y = x W^T + b in torch's dynamic int8 (fbgemm: weights per output
channel, activations quantized per call) against the port's float32 C kernels, at 5 rows (beam 5,
batch 1) and 160 rows (batch 32), for the products the shipped and wmt19-size models have.
porting/kernels/quantize.py's rule (``gains``) is read off this table.

    .venv/bin/python benchmarks/int8_products.py [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SHAPES = [(128, 384), (128, 512), (512, 128), (128, 7000), (512, 2048), (1024, 1024), (1024, 3072),
          (1024, 4096), (4096, 1024), (1024, 32000)]


def best_time(f, reps: int) -> float:
    """The fastest of 5 runs of `reps` calls, per call, in microseconds (after one call to warm up)."""
    f()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(reps):
            f()
        best = min(best, (time.perf_counter() - start) / reps)
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    import torch
    from torch import nn

    from porting.kernels import int8, native
    from porting.kernels.quantize import gains

    if not native.available():
        raise SystemExit(f"the C kernels are unavailable: {native.unavailable_reason()}")
    torch.set_num_threads(args.threads)
    print(f"threads {args.threads}, kernels {native.describe()}, int8 engines {int8.FEW_ROWS_ENGINE} "
          f"(then {int8.MANY_ROWS_ENGINE} from {int8.MANY_ROWS} rows), torch {torch.__version__}; "
          "times in us; float32 / int8 > 1: int8 is faster")
    print(f"{'inputs -> outputs':>18} {'weights':>9} {'rows':>5} {'float32':>9} {'int8':>9} {'f32 / int8':>10}  quantized")
    for k, n in SHAPES:
        layer = nn.Linear(k, n)
        panels, quantized = native.pack(layer.weight, layer.bias), int8.linear(nn.Linear(k, n))
        for m in (5, 160):
            x = torch.randn(m, k)
            reps = max(3, int(3e7 / (m * k * n)))
            a, b = best_time(lambda: native.linear(x, panels), reps), best_time(lambda: quantized(x), reps)
            print(f"{f'{k} -> {n}':>18} {k * n / 1e6:>8.2f}M {m:>5} {a:>9.1f} {b:>9.1f} {a / b:>10.2f}  "
                  f"{'yes' if gains(layer) else 'no'}")


if __name__ == "__main__":
    main()
