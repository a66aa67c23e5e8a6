"""The fast encoder: the same function as ``porting.model.transformer.Encoder``, computed on real tokens only.

A batch of sources is padded to its longest line, and fairseq's encoder (like ours in
``porting.model.transformer``, which follows it kernel by kernel) runs every position-wise product (q/k/v and
output projections, both feed-forward layers, layer norms) on the padding too. Padding changes no
real token's value: those rows are masked out of every attention as keys and never read as
queries. Here the position-wise work runs on the real tokens alone ([T, C], T = number of real
tokens); only attention itself sees the padded [B, H, S, D] layout. In a batch of unsorted lines
most positions can be padding (README "Speed").

Results differ from fairseq's in the last bits (different GEMM shapes and attention kernels), like
every fast kernel; the parity suites check that hypotheses stay identical. The output carries the
real rows (``EncoderOut.kept``) so the fast decoder projects encoder keys/values on them alone too.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from porting.format import PAD
from porting.kernels import attention
from porting.kernels.fast_decoder import additive_mask, fused_qkv, padded
from porting.model.positions import positions_for
from porting.model.transformer import Embeddings, EncoderOut, Transformer, residual_block


class FastEncoder:
    def __init__(self, model: Transformer, use_native: bool = True):
        self.encoder = model.encoder
        self.attention = attention.select(use_native)
        self.heads = model.arch.encoder_attention_heads
        self.qkv = [fused_qkv(layer.self_attn) for layer in self.encoder.layers]

    def __call__(self, src_tokens: Tensor) -> EncoderOut:
        """src_tokens [B, S] (left-padded) -> EncoderOut with out [S, B, C] (zeros at padding)."""
        enc = self.encoder
        b, s = src_tokens.shape
        pad = src_tokens.eq(PAD)                                            # [B, S]
        if not bool(pad.any()):
            pad = None
        x = Embeddings.forward(enc, src_tokens, positions_for(src_tokens, PAD))   # [B, S, C]
        c = x.size(-1)
        # real tokens' rows in the batch-major [B*S] order
        keep = None if pad is None else (~pad).view(-1).nonzero().squeeze(1)      # [T]
        rows = x.view(b * s, c) if keep is None else x.view(b * s, c).index_select(0, keep)   # [T, C]
        mask = additive_mask(pad, x.dtype)
        for layer, qkv in zip(enc.layers, self.qkv):
            rows = residual_block(rows, layer.self_attn_layer_norm,
                                  lambda h: self._self_attn(layer, qkv, h, keep, b, s, mask), layer.pre)
            rows = residual_block(rows, layer.final_layer_norm, lambda h: layer.fc2(layer.act(layer.fc1(h))), layer.pre)
        if enc.layer_norm is not None:
            rows = enc.layer_norm(rows)
        out = padded(rows, keep, b * s).view(b, s, c).transpose(0, 1)     # [B*S, C] -> [S, B, C]
        return EncoderOut(out, pad, kept=None if keep is None else (rows, keep))

    def _self_attn(self, layer, qkv: nn.Linear, h: Tensor, keep: Tensor | None, b: int, s: int,
                   mask: Tensor | None) -> Tensor:
        a = layer.self_attn
        c = h.size(1)
        full = padded(F.linear(h, qkv.weight, qkv.bias), keep, b * s)      # [B*S, 3C]
        # [B*S, 3C] -> [B, S, 3, H, D] -> [3, B, H, S, D]
        q, k, v = full.view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        out = self.attention(q * a.scaling, k, v, mask)                          # [B, H, S, D]
        out = out.transpose(1, 2).reshape(b * s, c)                         # [B, S, H, D] -> [B*S, C]
        if keep is not None:
            out = out.index_select(0, keep)                                 # [T, C]
        return a.out_proj(out)

