"""Attention for the fast kernels: one contract, three implementations, chosen once.

The contract: ``attend(q, k, v, mask)`` = softmax(q k^T + mask) v for q [N, H, Q, D] (already
scaled, as fairseq scales q before the product), k and v [N, H, T, D], mask additive (0 or -inf)
[N, 1, 1, T] or None -> [N, H, Q, D]; softmax in float32 for float32 inputs.

  naive   q k^T, softmax, x v: three torch calls (the fastest for many rows)
  torch   torch's fused ``F.scaled_dot_product_attention``
  native  porting/kernels/skinny.c's few-row kernel (float32 only)

``select(native)`` picks once, for a decoder or an encoder, the function they call: for few
(batch, head, query) rows the native kernel where asked for and built (torch's fused one for
other dtypes or where it is not), and the naive one for more rows, where both fused kernels are
slower. porting/kernels/skinny.c's decoder layers inline the native one.

Over a padded batch (the encoder's self-attention, the decoder's attention to the encoder), ``groups``
splits the sentences into runs of neighbours and ``grouped`` attends within each run over the columns where
any of them has a real token only: in a batch of lines sorted by length most of the padded [S, S] scores
are padding (the speed benchmark's 32 lines: 422 real tokens of 32 x 59 positions). Measured there, the
wmt19-size model at batch 32 in one process taking turns (6 rounds, the same hypotheses): int8 265 tok/s at
best (243 median) against 226 (215) over the whole batch; float32 91 against 86. Only torch's fast path groups
(``--kernels portable``, int8, bfloat16, encoders too large for skinny.c's panels); skinny.c's layers attend
over the padded batch.

Not behind this contract: ``porting.model.transformer.Attention``, which reproduces fairseq's own
operations one by one (bitwise equal scores, ``--kernels exact``) and must stay as fairseq has it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from porting.kernels import native as native_kernels

FUSED_ATTENTION_ROWS = 64   # at most this many (batch, head, query) rows: one fused call
# one group's fixed cost (``groups``: its ~5 torch calls, ~50 us) in (sentence, head, query, key) scores, whose
# products and softmax cost ~4-9 ns each (measured on the project's AMD EPYC, 2 threads, D 64)
GROUP_COST = 10_000

Attend = Callable[[Tensor, Tensor, Tensor, "Tensor | None"], Tensor]


def naive(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    weights = torch.matmul(q, k.transpose(-1, -2))                        # [N, H, Q, T]
    if mask is not None:
        weights += mask
    return torch.matmul(torch.softmax(weights, dim=-1), v)


def fused(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


def native(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
    """The C kernel for float32; torch's fused kernel for other dtypes."""
    if q.dtype != torch.float32:
        return fused(q, k, v, mask)
    return native_kernels.attention(q, k, v, mask)


def select(use_native: bool) -> Attend:
    """The attention a decoder or encoder uses, chosen once."""
    few_rows = native if use_native and native_kernels.available() else fused

    def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        if q.size(0) * q.size(1) * q.size(2) <= FUSED_ATTENTION_ROWS:
            return few_rows(q, k, v, mask)
        return naive(q, k, v, mask)
    attend.few_rows = few_rows                                            # which one (tests, `porting kernels`)
    return attend


@dataclass(frozen=True)
class Group:
    """Sentences [first, end) of a padded batch, the key columns [lo, hi) where any of them has a real token, and
    whether any of them has padding among those columns (the mask is then still needed)."""
    first: int
    end: int
    lo: int
    hi: int
    masked: bool


WHOLE = Group(0, 0, 0, 0, True)     # a batch without padding, as one group


def groups(pad: Tensor | None, heads: int, queries: int | None = None) -> list[Group]:
    """A padded batch's sentences (pad [B, S], True at padding; None: none) cut into runs of neighbours whose
    attention, each run over its own columns, costs least: per run ``GROUP_COST`` plus its scores, sentences x
    heads x queries x columns, where queries is the columns themselves for self-attention (None) or the
    queries per sentence (the decoder's beam). Found exactly by dynamic programming over the cut points."""
    if pad is None:
        return [WHOLE]
    real = ~pad.numpy()                                                    # [B, S]
    b, s = real.shape
    any_real = real.any(1)
    lo = np.where(any_real, real.argmax(1), s)                             # first real column per sentence
    hi = np.where(any_real, s - real[:, ::-1].argmax(1), 0)                # one past the last
    best = np.zeros(b + 1)                                                 # best[j]: sentences [0, j) cut best
    cut = np.zeros(b + 1, dtype=np.int64)
    for j in range(1, b + 1):
        # runs [i, j) for every i < j: their columns from running minima/maxima, right to left
        width = np.maximum(np.maximum.accumulate(hi[j - 1::-1]) - np.minimum.accumulate(lo[j - 1::-1]), 0)[::-1]
        rows = np.arange(j, 0, -1)                                         # sentences in [i, j)
        cost = best[:j] + GROUP_COST + rows * heads * (width if queries is None else queries) * width
        cut[j] = int(cost.argmin())
        best[j] = cost[cut[j]]
    runs, j = [], b
    while j > 0:
        i = int(cut[j])
        first, last = int(lo[i:j].min()), int(hi[i:j].max())
        runs.append(Group(i, j, first, last, not bool(real[i:j, first:last].all())))
        j = i
    return runs[::-1]


def kept(runs: list[Group], sentences: list[int], pad: Tensor | None) -> list[Group]:
    """``runs`` after sentences left the batch: ``sentences`` the old position of each one still there
    (increasing, as the search keeps them), ``pad`` [B', S] theirs. Each run's sentences stay together, over
    their own columns again; no new cut is sought (``groups`` costs ~10 us per sentence, and sentences leave
    at many steps of a batch)."""
    if pad is None:
        return [WHOLE]
    real = ~pad.numpy()                                                    # [B', S]
    ends = [len(sentences) if g is WHOLE else int(np.searchsorted(sentences, g.end)) for g in runs]
    out, first = [], 0
    for end in ends:                                                       # the new positions [first, end)
        if end > first:
            cols = real[first:end].any(0).nonzero()[0]
            lo, hi = int(cols[0]), int(cols[-1]) + 1
            out.append(Group(first, end, lo, hi, not bool(real[first:end, lo:hi].all())))
        first = end
    return out


def grouped(attend: Attend, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, runs: list[Group],
            trim_queries: bool) -> list[Tensor]:
    """``attend`` within each group of ``groups``: q [B, H, Q, D], k and v [B, H, S, D], mask [B, 1, 1, S] ->
    per group its sentences' [b, H, Q or hi - lo, D] (queries trimmed to the columns too where
    ``trim_queries``: self-attention, whose queries outside them are padding, never read). ``WHOLE`` is the
    whole batch as it is."""
    out = []
    for g in runs:
        if g is WHOLE:
            out.append(attend(q, k, v, mask))
            continue
        cols = slice(g.lo, g.hi)
        gm = mask[g.first:g.end, :, :, cols] if g.masked else None
        gq = q[g.first:g.end, :, cols] if trim_queries else q[g.first:g.end]
        out.append(attend(gq, k[g.first:g.end, :, cols], v[g.first:g.end, :, cols], gm))
    return out
