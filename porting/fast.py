"""The fast decoder step: the same model and the same search, cheaper kernels.

`porting.model` follows fairseq kernel by kernel, which makes it bitwise equal to fairseq and is
kept as ``kernels="exact"``. This module computes the same function for incremental decoding
(generation) with fewer and better-suited operations; its results differ from fairseq's in the
last bits only (float summation order), and the parity suites check that every hypothesis stays
identical (tests/test_port_reference_runs.py, tests/test_port_live_fairseq.py):

  * encoder-attention keys/values once per *sentence*, not once per beam row (fairseq computes and
    carries `beam` identical copies): the beam rows of a sentence attend together, [B, H, beam, S];
  * self-attention q, k and v from one fused projection ([3C, C] weights, concatenated once), and
    keys and values cached together ([N, 2, H, t, D]: one concatenation and one reorder per layer);
  * attention as one ``F.scaled_dot_product_attention`` call (q pre-scaled as fairseq does, so the
    kernel's own scale is 1); softmax accumulates in float32 as fairseq's does;
  * batch-first [N, C] states for the one-token step: no [1, N, C] time dimension to carry;
  * few rows (beam 5 of one sentence): weights [out, in] times x^T, which streams each weight row
    once. torch's ``F.linear`` takes a path ~2-3x slower for such skinny products on this CPU
    (measured: 5 x 1024 -> 31232 in 29 ms vs 8 ms; from 40 rows on, both are the same).
Layers that are not plain ``nn.Linear`` (int8-quantized ones) are called as modules.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.model import PAD, Embeddings, EncoderOut, Transformer, residual_block

SKINNY_ROWS = 16            # at most this many rows,
SKINNY_WEIGHTS = 1 << 19    # and at least this many weights: the weight-streaming product pays
                            # (below, per-call overhead dominates and F.linear is as fast)


def linear(x: Tensor, layer: nn.Module) -> Tensor:
    """layer(x) for x [N, C_in] -> [N, C_out]."""
    if type(layer) is not nn.Linear:
        return layer(x)
    if x.size(0) > SKINNY_ROWS or layer.weight.numel() < SKINNY_WEIGHTS:
        return F.linear(x, layer.weight, layer.bias)
    if layer.bias is None:
        return torch.mm(layer.weight, x.t()).t().contiguous()                   # [out, N] -> [N, out]
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x.t()).t().contiguous()


class FastDecoder:
    """Incremental decoding for one model. Caches are the per-layer dicts of ``Ensemble.new_caches``;
    same interface as ``porting.generate.ExactDecoder``."""

    def __init__(self, model: Transformer):
        self.model = model
        self.heads = model.arch.decoder_attention_heads
        self.qkv = []
        for layer in model.decoder.layers:
            a = layer.self_attn
            fused = nn.Linear(a.q_proj.in_features, 3 * a.q_proj.out_features).to(a.q_proj.weight.dtype)
            with torch.no_grad():
                fused.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
                fused.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
            self.qkv.append(fused.requires_grad_(False))
        # The output projection is the largest product per step. For many rows MKL multiplies
        # faster by weights laid out [in, out] (measured 160 x 128 -> 6992: 2.1 ms vs 4.0 ms with
        # F.linear; same values, bitwise equal results); for few rows the [out, in] layout streams
        # better (see linear()). One extra copy of this one matrix keeps both.
        out = model.decoder.output_projection
        self.output_t = out.weight.detach().t().contiguous() if type(out) is nn.Linear else None   # [C, V]

    def step(self, prev: Tensor, enc: EncoderOut, caches: list[dict]) -> Tensor:
        """prev [N, t] (all tokens so far), enc per sentence (B = N / beam) -> logits [N, V]."""
        dec = self.model.decoder
        n, t = prev.shape
        positions = torch.full((n, 1), PAD + t, dtype=torch.long)   # no padding while generating
        x = Embeddings.forward(dec, prev[:, -1:], positions)[:, 0]          # [N, 1, C] -> [N, C]
        for layer, qkv, cache in zip(dec.layers, self.qkv, caches):
            x = residual_block(x, layer.self_attn_layer_norm, lambda h: self._self_attn(layer, qkv, h, cache), layer.pre)
            x = residual_block(x, layer.encoder_attn_layer_norm, lambda h: self._cross_attn(layer, h, enc, cache), layer.pre)
            x = residual_block(x, layer.final_layer_norm,
                               lambda h: linear(layer.act(linear(h, layer.fc1)), layer.fc2), layer.pre)
        if dec.layer_norm is not None:
            x = dec.layer_norm(x)
        if self.output_t is not None and x.size(0) > SKINNY_ROWS:   # None once quantized
            return torch.mm(x, self.output_t)                               # [N, C] x [C, V]
        return linear(x, dec.output_projection)

    def _self_attn(self, layer, qkv: nn.Module, h: Tensor, cache: dict) -> Tensor:
        a = layer.self_attn
        n, c = h.shape
        q, kv = linear(h, qkv).split((c, 2 * c), dim=1)                    # [N, C], [N, 2C]
        q = (q * a.scaling).view(n, self.heads, 1, -1)                      # [N, H, 1, D]
        kv = kv.reshape(n, 2, self.heads, 1, -1)                            # [N, 2, H, 1, D]
        if "kv" in cache:
            kv = torch.cat([cache["kv"], kv], 3)                            # [N, 2, H, t, D]
        cache["kv"] = kv
        out = F.scaled_dot_product_attention(q, kv[:, 0], kv[:, 1], scale=1.0)   # [N, H, 1, D]
        return linear(out.view(n, c), a.out_proj)

    def _cross_attn(self, layer, h: Tensor, enc: EncoderOut, cache: dict) -> Tensor:
        a = layer.encoder_attn
        n, c = h.shape
        if "enc_k" not in cache:                                            # first step: one copy per sentence
            s, b, _ = enc.out.shape
            flat = enc.out.reshape(s * b, c)                                 # [S, B, C] -> [S*B, C]
            # [S*B, C] -> [S, B, H, D] -> [B, H, S, D]
            cache["enc_k"] = linear(flat, a.k_proj).view(s, b, self.heads, -1).permute(1, 2, 0, 3).contiguous()
            cache["enc_v"] = linear(flat, a.v_proj).view(s, b, self.heads, -1).permute(1, 2, 0, 3).contiguous()
            cache["enc_mask"] = None if enc.pad_mask is None else ~enc.pad_mask[:, None, None, :]   # [B, 1, 1, S]
            cache["beam"] = n // b
        k, v, mask = cache["enc_k"], cache["enc_v"], cache["enc_mask"]
        b, beam = k.size(0), cache["beam"]
        q = (linear(h, a.q_proj) * a.scaling).view(b, beam, self.heads, -1).transpose(1, 2)  # [B, H, beam, D]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)          # [B, H, beam, D]
        return linear(out.transpose(1, 2).reshape(n, c), a.out_proj)

    @staticmethod
    def for_beam(enc: EncoderOut, beam: int) -> EncoderOut:
        """One copy per sentence: the beam rows of a sentence attend to it together."""
        return enc

    @staticmethod
    def reorder(caches: list[dict], order: Tensor) -> None:
        """Follow the surviving hypotheses (order: old row per new row). Encoder keys/values are per
        sentence, so they change only when sentences leave: every new sentence's rows come from
        one old sentence."""
        for cache in caches:
            cache["kv"] = cache["kv"].index_select(0, order)
            beam = cache["beam"]
            if cache["enc_k"].size(0) * beam != order.numel():
                sentences = order.view(-1, beam)[:, 0] // beam
                cache["enc_k"] = cache["enc_k"].index_select(0, sentences)
                cache["enc_v"] = cache["enc_v"].index_select(0, sentences)
                if cache["enc_mask"] is not None:
                    cache["enc_mask"] = cache["enc_mask"].index_select(0, sentences)
