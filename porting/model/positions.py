"""fairseq's sinusoidal positional embeddings (tensor2tensor's variant).

Not Vaswani et al.'s interleaved sin/cos: the first half of each row is sin, the second cos; the
frequency step uses ``half_dim - 1``; odd dimensions get a zero column; positions start at
``padding_idx + 1`` and the padding row is zero.
"""
from __future__ import annotations

import math

import torch


def sinusoidal_table(num_positions: int, dim: int, padding_idx: int | None) -> torch.Tensor:
    """[num_positions, dim] float32, computed exactly as fairseq computes it, on the CPU even where the
    default device is another (porting.model.load builds its module tree on the meta device)."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.float, device="cpu") * -step)                   # [half]
    angles = torch.arange(num_positions, dtype=torch.float, device="cpu").unsqueeze(1) * freqs.unsqueeze(0)  # [P, half]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).view(num_positions, -1)   # [P, 2*half]
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(num_positions, 1, device="cpu")], dim=1)
    if padding_idx is not None:
        table[padding_idx, :] = 0
    return table


def positions_for(tokens: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """Position ids as fairseq numbers them: padding_idx + 1 + index among non-pad tokens; pads get
    padding_idx. Works for left- and right-padded batches. [B, T] -> [B, T]"""
    mask = tokens.ne(padding_idx).int()
    return torch.cumsum(mask, dim=1).type_as(mask) * mask + padding_idx
