"""Comparing two runs tensor by tensor: pure functions over plain data.

For each named tensor: shape, max/mean absolute error, max relative error, normalised MSE and its
SQNR in dB, and the absolute tolerance that would have passed (at the given rtol). A tensor is within
tolerance by atol/rtol (an exact port) or, for an approximate port, by a least SQNR (its type's
budget, parity/approximation.py). The first tensor in forward order beyond it is *the first
divergence*: where a porting bug shows itself first.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from parity.approximation import sqnr_db


@dataclass
class TensorDiff:
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    max_rel: float
    nmse: float
    sqnr_db: float       # 10·log10(‖original‖² / ‖original − port‖²); inf where equal
    atol_needed: float   # smallest atol that passes |a - b| <= atol + rtol * |b| everywhere
    ok: bool

    def to_dict(self) -> dict:
        return asdict(self)


def diff(name: str, port: torch.Tensor, original: torch.Tensor, atol: float, rtol: float,
         min_sqnr_db: float | None = None) -> TensorDiff:
    """min_sqnr_db: an approximate port's bound (None: the exact one, atol and rtol)."""
    if tuple(port.shape) != tuple(original.shape):
        return TensorDiff(name, list(original.shape), float("inf"), float("inf"), float("inf"), float("inf"),
                          float("-inf"), float("inf"), False)
    a, b = port.double(), original.double()
    err = (a - b).abs()
    finite = torch.isfinite(b)
    err = torch.where(finite, err, torch.where(a == b, torch.zeros_like(err), torch.full_like(err, float("inf"))))
    rel = err / b.abs().clamp_min(1e-12)
    needed = float((err - rtol * b.abs()).clamp_min(0).max()) if err.numel() else 0.0
    power = float((b[finite] ** 2).mean()) if finite.any() else 0.0
    nmse = float((err[finite] ** 2).mean()) / power if power > 0 else 0.0
    if not bool(torch.isfinite(err).all()):
        nmse = float("inf")                         # a non-finite value where the original has a finite one
    sqnr = sqnr_db(nmse)
    ok = needed <= atol if min_sqnr_db is None else sqnr >= min_sqnr_db
    return TensorDiff(name, list(b.shape), float(err.max()) if err.numel() else 0.0,
                      float(err.mean()) if err.numel() else 0.0, float(rel.max()) if rel.numel() else 0.0,
                      nmse, sqnr, needed, ok)


def first_divergence(diffs: list[TensorDiff]) -> TensorDiff | None:
    return next((d for d in diffs if not d.ok), None)


def first_differing_step(a: list[int], b: list[int]) -> int | None:
    """Index of the first token where two hypotheses part (None when identical)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
