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

Not behind this contract: ``porting.model.transformer.Attention``, which reproduces fairseq's own
operations one by one (bitwise equal scores, ``--kernels exact``) and must stay as fairseq has it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from porting.kernels import native as native_kernels

FUSED_ATTENTION_ROWS = 64   # at most this many (batch, head, query) rows: one fused call

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
