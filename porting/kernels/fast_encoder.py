"""The fast encoder: the same function as ``porting.model.transformer.Encoder``, computed on real tokens only.

A batch of sources is padded to its longest line, and fairseq's encoder (like ours in
``porting.model.transformer``, which follows it kernel by kernel) runs every position-wise product (q/k/v and
output projections, both feed-forward layers, layer norms) on the padding too. Padding changes no
real token's value: those rows are masked out of every attention as keys and never read as
queries. Here the position-wise work runs on the real tokens alone ([T, C], T = number of real
tokens); only attention itself sees the padded [B, H, S, D] layout. In a batch of unsorted lines
most positions can be padding (README "Speed").

Where porting/kernels/skinny.c is built (``--kernels fast``), the layers run as one C call on those
rows (``native.EncoderLayers``; at batch 1 a layer's ~30 torch calls cost more than its products),
torch's layers elsewhere (``--kernels portable``, int8 layers, bfloat16, large encoders: ``_whole_layers``).

Results differ from fairseq's in the last bits (different GEMM shapes and attention kernels), like
every fast kernel; the parity suites check that hypotheses stay identical. The output carries the
real rows (``EncoderOut.kept``) so the fast decoder projects encoder keys/values on them alone too.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from porting.format import PAD
from porting.kernels import attention, fast_decoder, native
from porting.kernels.fast_decoder import additive_mask, fused_qkv, pack, padded
from porting.model.positions import positions_for
from porting.model.transformer import EncoderOut, Transformer, residual_block


class FastEncoder:
    def __init__(self, model: Transformer, use_native: bool = True):
        """use_native: porting/kernels/skinny.c's layers where they are built (False: torch's alone,
        ``--kernels portable``)."""
        self.model, self.encoder = model, model.encoder
        self.use_native = use_native
        self.attention = attention.select(use_native)
        self.heads = model.arch.encoder_attention_heads
        self.repack()

    def repack(self) -> None:
        """Derive what the layers run on from the current ones (again after they are replaced:
        porting/kernels/quantize.py): one porting/kernels/skinny.c call (``layers_c``, the products'
        weights packed as panels) where ``_whole_layers`` allows it, else torch's layers on a fused
        q/k/v projection per layer (``qkv``); only one of the two copies is kept."""
        self.qkv = None
        self.layers_c = self._whole_layers()
        if self.layers_c is None:
            self.qkv = [fused_qkv(layer.self_attn) for layer in self.encoder.layers]

    def _whole_layers(self) -> native.EncoderLayers | None:
        """The layers as one skinny.c call, where it is built and asked for, every product is a float32
        ``nn.Linear`` with a bias, the activation has a C case, and the panels (a second copy of the products'
        weights) stay within fast_decoder.MAX_PANEL_WEIGHTS with the rest of the encoder's side; else None."""
        if not (self.use_native and native.available()):
            return None
        layers = self.encoder.layers
        linears = [lin for layer in layers for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj,
                                                       layer.self_attn.out_proj, layer.fc1, layer.fc2)]
        if (any(type(lin) is not nn.Linear or lin.weight.dtype != torch.float32 or lin.bias is None for lin in linears)
                or not all(native.activation_supported(layer.activation) for layer in layers)
                or fast_decoder.encoder_side_weights(self.model) > fast_decoder.MAX_PANEL_WEIGHTS):
            return None
        return native.EncoderLayers([
            native.Layer({"qkv": pack(fused_qkv(layer.self_attn)), "self_out": pack(layer.self_attn.out_proj),
                          "fc1": pack(layer.fc1), "fc2": pack(layer.fc2)},
                         {"self_ln": layer.self_attn_layer_norm, "final_ln": layer.final_layer_norm},
                         layer.fc1.out_features, self.heads, layer.pre, layer.activation, layer.self_attn.scaling)
            for layer in layers])

    def __call__(self, src_tokens: Tensor) -> EncoderOut:
        """src_tokens [B, S] (left-padded) -> EncoderOut with out [S, B, C] (zeros at padding)."""
        enc = self.encoder
        b, s = src_tokens.shape
        pad = src_tokens.eq(PAD)                                            # [B, S]
        if not bool(pad.any()):
            pad = None
        x = enc.embed(src_tokens, positions_for(src_tokens, PAD))                  # [B, S, C]
        if enc.layernorm_embedding is not None:
            x = self._norm(enc.layernorm_embedding, x.view(b * s, -1)).view(b, s, -1)
        c = x.size(-1)
        # real tokens' rows in the batch-major [B*S] order
        keep = None if pad is None else (~pad).view(-1).nonzero().squeeze(1)      # [T]
        rows = x.view(b * s, c) if keep is None else x.view(b * s, c).index_select(0, keep)   # [T, C]
        mask = additive_mask(pad, x.dtype)
        if self.layers_c is not None:
            # Embeddings.forward's result (or its rows) is a tensor of its own: updated in place
            rows = rows.detach().contiguous()
            self.layers_c(rows, keep, b, s, mask)
        else:
            runs = attention.groups(pad, self.heads)                           # the attention's groups of sentences
            for layer, qkv in zip(enc.layers, self.qkv):
                rows = residual_block(rows, layer.self_attn_layer_norm,
                                      lambda h: self._self_attn(layer, qkv, h, keep, b, s, mask, runs), layer.pre)
                rows = residual_block(rows, layer.final_layer_norm, lambda h: layer.fc2(layer.act(layer.fc1(h))),
                                      layer.pre)
        if enc.layer_norm is not None:
            rows = self._norm(enc.layer_norm, rows)
        out = padded(rows, keep, b * s).view(b, s, c).transpose(0, 1)     # [B*S, C] -> [S, B, C]
        return EncoderOut(out, pad, kept=None if keep is None else (rows, keep))

    def _norm(self, norm: nn.LayerNorm, x: Tensor) -> Tensor:
        """The encoder's layer norms outside its layers (BART's on the embedding, a pre-norm model's final one):
        where the layers run in skinny.c, its arithmetic too (porting/lean.py repeats it), else the module."""
        return native.layer_norm(x.contiguous(), norm) if self.layers_c is not None else norm(x)

    def _self_attn(self, layer, qkv: nn.Module, h: Tensor, keep: Tensor | None, b: int, s: int,
                   mask: Tensor | None, runs: list[attention.Group]) -> Tensor:
        a = layer.self_attn
        c = h.size(1)
        full = padded(qkv(h), keep, b * s)                                  # [B*S, 3C] (an int8 module too)
        # [B*S, 3C] -> [B, S, 3, H, D] -> [3, B, H, S, D]
        q, k, v = full.view(b, s, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        parts = attention.grouped(self.attention, q * a.scaling, k, v, mask, runs, trim_queries=True)
        if runs == [attention.WHOLE]:
            out = parts[0].transpose(1, 2).reshape(b * s, c)                # [B, H, S, D] -> [B, S, H, D] -> [B*S, C]
        else:
            # each group's [b, H, hi - lo, D] into its sentences' columns of [B, S, H, D]; the columns outside
            # every group are padding, never read (index_select below keeps the real tokens' rows)
            out = full.new_empty(b, s, self.heads, c // self.heads)
            for g, part in zip(runs, parts):
                out[g.first:g.end, g.lo:g.hi] = part.transpose(1, 2)
            out = out.view(b * s, c)
        if keep is not None:
            out = out.index_select(0, keep)                                 # [T, C]
        return a.out_proj(out)

