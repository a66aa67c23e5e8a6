"""The fairseq encoder-decoder transformer, natively, loading a converted directory.

Parameter names are the converted file's (``model.`` prefix stripped), so loading is the identity.
The computation follows fairseq step by step, including which kernel it uses where, because beam
search amplifies last-bit differences into different hypotheses:
  * full-sequence attention (the encoder, and the decoder when teacher-forced) goes through
    ``F.multi_head_attention_forward``, as fairseq's fast path does;
  * incremental decoding (generation) computes attention by hand, q scaled before ``q @ k^T``,
    softmax in float32, as fairseq's incremental path does; encoder-attention keys and values are
    computed once and cached, self-attention keys and values grow by one step each call.
Shapes follow fairseq: T x B x C inside the layers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.format import PAD, Arch
from porting.model.activation import Activation
from porting.model.positions import positions_for, sinusoidal_table


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.scaling = self.head_dim ** -0.5
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))

    def full(self, query: Tensor, key: Tensor, key_padding_mask: Tensor | None, attn_mask: Tensor | None) -> Tensor:
        """fairseq's fast path: [T, B, C] -> [T, B, C]."""
        if not all(type(p) is nn.Linear for p in (self.q_proj, self.k_proj, self.v_proj, self.out_proj)):
            # an int8 model's projections are modules without float weights (porting/kernels/quantize.py):
            # they are called as modules, on the manual path
            bsz = key.size(1)
            k, v = self.split(self.k_proj(key), bsz), self.split(self.v_proj(key), bsz)   # [B*H, S, D]
            return self.manual(query, k, v, key_padding_mask, attn_mask)
        return F.multi_head_attention_forward(
            query, key, key, self.q_proj.in_features, self.heads, torch.empty([0]),
            torch.cat((self.q_proj.bias, self.k_proj.bias, self.v_proj.bias)), None, None, False, 0.0,
            self.out_proj.weight, self.out_proj.bias, training=False, key_padding_mask=key_padding_mask,
            need_weights=False, attn_mask=attn_mask, use_separate_proj_weight=True,
            q_proj_weight=self.q_proj.weight, k_proj_weight=self.k_proj.weight, v_proj_weight=self.v_proj.weight)[0]

    def split(self, x: Tensor, bsz: int) -> Tensor:
        return x.contiguous().view(-1, bsz * self.heads, self.head_dim).transpose(0, 1)  # [T,B,C] -> [B*H,T,D]

    def manual(self, query: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None,
               attn_mask: Tensor | None = None) -> Tensor:
        """fairseq's manual path: [T, N, C] queries on [N*H, S, D] keys/values -> [T, N, C]; attn_mask
        [T, S] is added to the weights (the decoder's future mask, teacher-forced).

        fairseq also has an einsum variant that keeps encoder keys once per sentence in beam search,
        switched on for BART's models only: ``beamable`` (porting/NOTES.md)."""
        tgt_len, bsz, dim = query.shape
        src_len = k.size(1)
        q = self.q_proj(query)
        q *= self.scaling
        q = self.split(q, bsz)                                              # [N*H, T, D]
        weights = torch.bmm(q, k.transpose(1, 2))                           # [N*H, T, S]
        if attn_mask is not None:
            weights += attn_mask                                            # [T, S] over every row
        if key_padding_mask is not None:
            weights = weights.view(bsz, 1, self.heads, tgt_len, src_len).masked_fill(
                key_padding_mask.unsqueeze(1).unsqueeze(2).unsqueeze(3).to(torch.bool), float("-inf"))
            weights = weights.view(bsz * self.heads, tgt_len, src_len)
        probs = F.softmax(weights.float(), dim=-1).type_as(weights)
        out = torch.bmm(probs, v)                                           # [N*H, T, D]
        out = out.transpose(0, 1).contiguous().view(tgt_len, bsz, dim)      # [T, N, C]
        return self.out_proj(out)

    def beamable(self, query: Tensor, k: Tensor, v: Tensor, key_padding_mask: Tensor | None, beam: int) -> Tensor:
        """fairseq's beamable encoder attention (BART's models: ``set_beam_size``): [T, N, C] queries, N =
        sentences * beam rows, on keys/values kept once per sentence, [S_n*H, S, D] -> [T, N, C]; the
        products as fairseq's einsums over the beam, so that the exact kernels stay bitwise equal."""
        tgt_len, bsz, dim = query.shape
        kv_bsz, src_len = k.size(0) // self.heads, k.size(1)
        q = self.q_proj(query)
        q *= self.scaling
        q = self.split(q, bsz)                                              # [N*H, T, D]
        weights = torch.einsum("bxhtd,bhsd->bxhts", q.view(kv_bsz, -1, self.heads, tgt_len, self.head_dim),
                               k.view(kv_bsz, self.heads, src_len, self.head_dim))   # [S_n, beam, H, T, S]
        weights = weights.reshape(-1, tgt_len, src_len)                    # [N*H, T, S]
        if key_padding_mask is not None:
            weights = weights.view(kv_bsz, -1, self.heads, tgt_len, src_len).masked_fill(
                key_padding_mask.unsqueeze(1).unsqueeze(2).unsqueeze(3).to(torch.bool), float("-inf"))
            weights = weights.view(bsz * self.heads, tgt_len, src_len)
        probs = F.softmax(weights.float(), dim=-1).type_as(weights)
        out = torch.einsum("bxhts,bhsd->bxhtd", probs.view(kv_bsz, -1, self.heads, tgt_len, src_len),
                           v.view(kv_bsz, self.heads, src_len, self.head_dim))   # [S_n, beam, H, T, D]
        out = out.reshape(-1, tgt_len, self.head_dim)                       # [N*H, T, D]
        out = out.transpose(0, 1).contiguous().view(tgt_len, bsz, dim)      # [T, N, C]
        return self.out_proj(out)


LAYER_NORM_EPS = 1e-5   # fairseq's LayerNorm (torch's default); BERT-style ports often use 1e-12 by mistake


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=LAYER_NORM_EPS)


def residual_block(x: Tensor, norm: nn.LayerNorm, fn, pre_norm: bool) -> Tensor:
    """fairseq's sublayer: x + fn(norm(x)) when pre-norm, norm(x + fn(x)) when post-norm."""
    residual = x
    if pre_norm:
        x = norm(x)
    x = residual + fn(x)
    return x if pre_norm else norm(x)


class EncoderLayer(nn.Module):
    def __init__(self, a: Arch):
        super().__init__()
        self.pre = a.encoder_normalize_before
        self.activation = Activation.named(a.activation_fn)
        self.act = self.activation.fn
        self.self_attn = Attention(a.embed_dim, a.encoder_attention_heads)
        self.self_attn_layer_norm = layer_norm(a.embed_dim)
        self.fc1 = nn.Linear(a.embed_dim, a.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(a.encoder_ffn_embed_dim, a.embed_dim)
        self.final_layer_norm = layer_norm(a.embed_dim)

    def forward(self, x: Tensor, pad_mask: Tensor | None) -> Tensor:
        x = residual_block(x, self.self_attn_layer_norm, lambda h: self.self_attn.full(h, h, pad_mask, None), self.pre)
        return residual_block(x, self.final_layer_norm, lambda h: self.fc2(self.act(self.fc1(h))), self.pre)


class DecoderLayer(nn.Module):
    def __init__(self, a: Arch):
        super().__init__()
        self.pre = a.decoder_normalize_before
        self.activation = Activation.named(a.activation_fn)
        self.act = self.activation.fn
        self.self_attn = Attention(a.embed_dim, a.decoder_attention_heads)
        self.self_attn_layer_norm = layer_norm(a.embed_dim)
        self.encoder_attn = Attention(a.embed_dim, a.decoder_attention_heads)
        self.encoder_attn_layer_norm = layer_norm(a.embed_dim)
        self.fc1 = nn.Linear(a.embed_dim, a.decoder_ffn_embed_dim)
        self.fc2 = nn.Linear(a.decoder_ffn_embed_dim, a.embed_dim)
        self.final_layer_norm = layer_norm(a.embed_dim)

    def _block(self, x: Tensor, norm: nn.LayerNorm, fn) -> Tensor:
        return residual_block(x, norm, fn, self.pre)

    def forward(self, x: Tensor, enc: "EncoderOut", self_mask: Tensor, cache: "LayerCache | None" = None) -> Tensor:
        """Full sequence when ``cache`` is None ([T, B, C]); one step with it ([1, B, C])."""
        if cache is None:
            x = self._block(x, self.self_attn_layer_norm, lambda h: self.self_attn.full(h, h, None, self_mask))
        else:
            def self_step(h):
                bsz = h.size(1)
                k, v = self.self_attn.split(self.self_attn.k_proj(h), bsz), self.self_attn.split(self.self_attn.v_proj(h), bsz)
                if cache.k is not None:
                    k, v = torch.cat([cache.k, k], 1), torch.cat([cache.v, v], 1)  # [B*H, t, D]
                cache.k, cache.v = k, v
                return self.self_attn.manual(h, k, v, None)
            x = self._block(x, self.self_attn_layer_norm, self_step)

        def cross(h):
            if cache is not None and cache.enc_k is not None:
                k, v, mask = cache.enc_k, cache.enc_v, cache.enc_mask
            else:
                key, mask = enc.out, enc.pad_mask
                k = self.encoder_attn.split(self.encoder_attn.k_proj(key), key.size(1))
                v = self.encoder_attn.split(self.encoder_attn.v_proj(key), key.size(1))
                if cache is not None:
                    cache.enc_k, cache.enc_v, cache.enc_mask = k, v, mask
            # fairseq computes encoder attention by hand (static keys), teacher-forced or not; BART's
            # models in beam search with the keys kept once per sentence (EncoderOut.beam)
            if enc.beam > 1:
                return self.encoder_attn.beamable(h, k, v, mask, enc.beam)
            return self.encoder_attn.manual(h, k, v, mask)
        x = self._block(x, self.encoder_attn_layer_norm, cross)
        return self._block(x, self.final_layer_norm, lambda h: self.fc2(self.act(self.fc1(h))))


@dataclass
class LayerCache:
    """One decoder layer's incremental state on fairseq's path (its ``incremental_state``)."""
    k: Tensor | None = None            # self-attention keys so far, [N*H, t, D]
    v: Tensor | None = None
    enc_k: Tensor | None = None        # encoder-attention keys, computed at the first step, [N*H, S, D]
    enc_v: Tensor | None = None
    enc_mask: Tensor | None = None     # [N, S], True at padding (None: no padding)


@dataclass
class EncoderOut:
    out: Tensor                    # [S, B, C]
    pad_mask: Tensor | None        # [B, S], True at padding; None when the batch has none
    # porting/kernels/fast_encoder.py's output also keeps the real tokens' rows: ([T, C], their [T] indices
    # in the batch-major B*S order), for the fast decoder to project encoder keys/values on them
    kept: tuple[Tensor, Tensor] | None = None
    # the decoder rows that share each sentence's output, where the output is kept once per sentence
    # (fairseq's beamable encoder attention, BART's models: porting.generation.ensemble.ExactDecoder)
    beam: int = 1

    def select(self, order: Tensor) -> "EncoderOut":
        """Reorder/expand the batch (beam search): order indexes the batch dimension."""
        return EncoderOut(self.out.index_select(1, order),
                          None if self.pad_mask is None else self.pad_mask.index_select(0, order))


def _embedding(rows: int, dim: int) -> nn.Embedding:
    """nn.Embedding with fairseq's padding row. Built on the meta device (porting.model.load builds the tree
    there and fills it from the file) it skips the random initialisation: torch's normal_ on a meta tensor
    imports ~75 MB of its Python decompositions, more than a small model weighs."""
    if torch.get_default_device().type == "meta":
        return nn.Embedding(rows, dim, padding_idx=PAD, _weight=torch.empty(rows, dim))
    return nn.Embedding(rows, dim, padding_idx=PAD)


class Embeddings(nn.Module):
    def __init__(self, vocab: int, a: Arch, learned: bool, max_positions: int):
        super().__init__()
        self.embed_tokens = _embedding(vocab, a.embed_dim)
        self.scale = 1.0 if a.no_scale_embedding else math.sqrt(a.embed_dim)
        self.learned = learned
        rows = max_positions + PAD + 1
        if learned:
            self.embed_positions = _embedding(rows, a.embed_dim)
        else:
            self.register_buffer("sinusoidal", sinusoidal_table(rows, a.embed_dim, PAD), persistent=False)
        self.layernorm_embedding = layer_norm(a.embed_dim) if a.layernorm_embedding else None

    def position_table(self) -> Tensor:
        return self.embed_positions.weight if self.learned else self.sinusoidal

    def forward(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """tokens, positions: [B, T] -> [B, T, C]"""
        x = self.embed(tokens, positions)
        return self.layernorm_embedding(x) if self.layernorm_embedding is not None else x

    def embed(self, tokens: Tensor, positions: Tensor) -> Tensor:
        """``forward`` before the embedding's layer norm (where the model has one)."""
        table = self.position_table()
        if positions.max() >= table.size(0):
            if self.learned:
                raise ValueError(f"input needs position {int(positions.max()) - PAD}, the model has {table.size(0) - PAD - 1}")
            table = sinusoidal_table(int(positions.max()) + 1, table.size(1), PAD).to(table)  # fairseq extends too
        return self.scale * self.embed_tokens(tokens) + table[positions]


class Encoder(Embeddings):
    def __init__(self, vocab: int, a: Arch):
        super().__init__(vocab, a, a.encoder_learned_pos, a.max_source_positions)
        self.layers = nn.ModuleList(EncoderLayer(a) for _ in range(a.encoder_layers))
        self.layer_norm = layer_norm(a.embed_dim) if a.encoder_normalize_before else None

    def forward(self, src_tokens: Tensor, hooks=None) -> EncoderOut:
        pad = src_tokens.eq(PAD)                                           # [B, S]
        has_pads = bool(pad.any())
        x = super().forward(src_tokens, positions_for(src_tokens, PAD))
        x = x * (1 - pad.unsqueeze(-1).type_as(x) * has_pads)             # fairseq zeroes padded rows
        x = x.transpose(0, 1)                                              # [B, S, C] -> [S, B, C]
        x = _emit(hooks, "encoder.embed", x)
        for i, layer in enumerate(self.layers):
            x = layer(x, pad if has_pads else None)
            x = _emit(hooks, f"encoder.layers.{i}", x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
            x = _emit(hooks, "encoder.layer_norm", x)
        return EncoderOut(x, pad if has_pads else None)


class Decoder(Embeddings):
    def __init__(self, vocab: int, a: Arch):
        super().__init__(vocab, a, a.decoder_learned_pos, a.max_target_positions)
        self.layers = nn.ModuleList(DecoderLayer(a) for _ in range(a.decoder_layers))
        self.layer_norm = layer_norm(a.embed_dim) if a.decoder_final_norm else None
        self.output_projection = nn.Linear(a.embed_dim, vocab, bias=False)

    def forward(self, prev: Tensor, enc: EncoderOut, hooks=None) -> Tensor:
        """Teacher-forced: prev [B, T] -> logits [B, T, V]."""
        x = super().forward(prev, positions_for(prev, PAD)).transpose(0, 1)  # [T, B, C]
        x = _emit(hooks, "decoder.embed", x)
        T = x.size(0)
        future = torch.triu(torch.full((T, T), float("-inf")), 1).to(x)   # fairseq's buffered_future_mask
        for i, layer in enumerate(self.layers):
            x = layer(x, enc, future)
            x = _emit(hooks, f"decoder.layers.{i}", x)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
            x = _emit(hooks, "decoder.layer_norm", x)
        return self.output_projection(x.transpose(0, 1))

    def step(self, prev: Tensor, enc: EncoderOut, caches: list[LayerCache]) -> Tensor:
        """One incremental step: prev [B, t] (all tokens so far) -> logits [B, V] for the last one."""
        t = prev.size(1)
        # during generation there is no padding in `prev`: the position is padding_idx + t for everyone
        positions = torch.full((prev.size(0), 1), PAD + t, dtype=torch.long)
        x = super().forward(prev[:, -1:], positions).transpose(0, 1)       # [1, B, C]
        for layer, cache in zip(self.layers, caches):
            x = layer(x, enc, None, cache)
        if self.layer_norm is not None:
            x = self.layer_norm(x)
        return self.output_projection(x[0])                                # [B, V]


def _emit(hooks, name: str, x: Tensor) -> Tensor:
    """Show a layer boundary to ``hooks(name, x)``; a hook that returns a tensor replaces ``x`` from
    there on (the parity harness's shadow mode feeds each layer the original's input that way)."""
    if hooks is None:
        return x
    replaced = hooks(name, x)
    return x if replaced is None else replaced


class Transformer(nn.Module):
    def __init__(self, a: Arch, src_vocab: int, tgt_vocab: int, beamable: bool = False):
        super().__init__()
        self.arch = a
        # fairseq's BARTModel has set_beam_size: in beam search its encoder attention keeps keys and values
        # once per sentence (einsum over the beam); its TransformerModel has none. Last bits only: the
        # exact kernels follow it (porting.generation.ensemble.ExactDecoder)
        self.beamable = beamable
        self.encoder = Encoder(src_vocab, a)
        self.decoder = Decoder(tgt_vocab, a)

    def forward(self, src_tokens: Tensor, prev_output_tokens: Tensor, hooks=None) -> Tensor:
        """Teacher-forced logits [B, T, V]. ``hooks(name, tensor)`` sees every layer boundary
        (the names of parity/names.py) and may return a replacement for it."""
        return self.decoder(prev_output_tokens, self.encoder(src_tokens, hooks), hooks)

    @staticmethod
    def log_probs(logits: Tensor) -> Tensor:
        return F.log_softmax(logits.float(), dim=-1)  # fairseq normalises in float32
