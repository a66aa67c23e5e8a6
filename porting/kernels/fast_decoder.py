"""The fast decoder step: the same model and the same search, cheaper kernels (the encoder's
counterpart, which skips padding, is porting/kernels/fast_encoder.py).

`porting.model.transformer` follows fairseq kernel by kernel, which makes it bitwise equal to
fairseq and is kept as ``kernels="exact"``. This module computes the same function for incremental
decoding (generation) with fewer and better-suited operations; its results differ from fairseq's
in the last bits only (float summation order), and the parity suites check that every hypothesis
stays identical (tests/test_port_reference_runs.py, tests/test_port_live_fairseq.py), on the C
kernels (``kernels="fast"``) and on torch's alone (``kernels="portable"``). What each piece
bought, measured: README "Speed".

  * encoder-attention keys/values once per *sentence*, not once per beam row (fairseq computes and
    carries `beam` identical copies): the beam rows of a sentence attend together, [B, H, beam, S];
  * self-attention q, k and v from one fused projection ([3C, C] weights, concatenated once), and
    keys and values cached together ([2, N, H, t, D]: a step's reorder and append in one copy per layer);
  * attention through porting/kernels/attention.py's contract, its implementation chosen once;
    q is pre-scaled as fairseq does; softmax in float32;
  * batch-first [N, C] states for the one-token step: no [1, N, C] time dimension to carry;
  * every float32 product: porting/kernels/skinny.c, a register-blocked loop over weights packed
    once into panels, on torch's own threads for large products; it beats torch's GEMMs at every
    size the step meets. Where it cannot be built (no compiler, no AVX2) or is not asked for: for
    few rows and large weights oneDNN's inner product on weights packed for it
    (``torch.ops.mkldnn``, what torch's own compiler uses for frozen linears), else ``F.linear``;
  * one model (not an ensemble): the output projection, log_softmax, fairseq's column rules, the
    cumulative scores and the choice of the 2 x beam candidates in one call
    (``FastDecoder.candidates``, porting/kernels/skinny_candidates.c): the [N, V] logits are never
    written;
  * elsewhere the search's top-2*beam candidates from a prefilter (``top_candidates``): torch.topk
    over a sentence's beam x vocab scores costs ~1 ns per score, the maximum of each small chunk
    far less;
  * every product of every layer packed as panels (not after int8 quantization): the layers, glue
    included (cache append, scaling, residuals, layer norms, activation, attention), as one
    porting/kernels/skinny.c call a step (``native.DecoderLayers``), which also follows the search's
    reordering as it copies the cache (no separate reorder), and splits products and, from 17
    rows on, attention rows between torch's threads: at batch 1 a layer was ~25 torch calls
    costing more than their arithmetic.
  * where the whole step runs in those kernels (float32 layers, embedding and output projection), the
    search's loop too (``FastDecoder.search``, porting/kernels/skinny_search.c): every step and fairseq's
    bookkeeping in one call per batch, bitwise porting/generation/beam.py's loop on the same kernels;
    the decoder's layer norms outside the layers (BART's on the embedding, a pre-norm model's final one)
    then run in skinny.c as well, in the step and in the loop alike.
Layers that are not plain ``nn.Linear`` (int8-quantized ones) are called as modules.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from porting.format import PAD, UNK
from porting.kernels import attention, int8, native
from porting.model.transformer import Embeddings, EncoderOut, Transformer, residual_block

FEW_ROWS = 16               # without skinny.c, at most this many rows: oneDNN's packed weights
                            # (from ~20-40 rows on torch's GEMMs are as fast)
ONEDNN_WEIGHTS = 1 << 18    # without skinny.c, at least this many weights: oneDNN's packed ones
                            # (below, its ~25 us fixed cost per call dominates)
# Panels are a second copy of a product's weights (the model's own stay, for the other kernel sets). The
# encoder's side (its layers, porting/kernels/fast_encoder.py, and the decoder's projections of its output
# into encoder keys and values) gets them up to this many weights (64 MB; the shipped and m2m models hold
# ~0.7M): the encoder's output is then made in skinny.c on both sides, as porting/lean.py repeats it
# without torch. A wmt19-size model's (85M, 340 MB) would raise peak memory by a tenth: its encoder side
# keeps torch's layers and GEMMs, whose products carry its time (its glue is not what costs).
MAX_PANEL_WEIGHTS = 1 << 24


def encoder_side_weights(model: Transformer) -> int:
    """The weights of the encoder side's products (``MAX_PANEL_WEIGHTS``): the encoder layers' and the decoder
    layers' encoder-attention key and value projections."""
    linears = [lin for layer in model.encoder.layers for lin in (layer.self_attn.q_proj, layer.self_attn.k_proj,
                                                                 layer.self_attn.v_proj, layer.self_attn.out_proj,
                                                                 layer.fc1, layer.fc2)]
    linears += [p for layer in model.decoder.layers for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)]
    return sum(lin.in_features * lin.out_features for lin in linears)        # int8 modules have no .weight tensor


def pack(layer: nn.Module, use_native: bool = True) -> Tensor | native.Panels | None:
    """A float32 nn.Linear's weights packed once: porting/kernels/skinny.c's panels, which beat torch's
    GEMMs at every size the decoder step meets (README "Speed"); where it cannot be built or
    `use_native` is False, oneDNN's packed copy for large weights; None where neither exists or
    pays (``linear`` then uses F.linear, or the W x^T product for large weights and few rows)."""
    if type(layer) is not nn.Linear or layer.weight.dtype != torch.float32:
        return None
    if use_native and native.available():
        return native.pack(layer.weight, layer.bias)
    if layer.weight.numel() < ONEDNN_WEIGHTS:
        return None
    try:
        return torch.ops.mkldnn._reorder_linear_weight(layer.weight.detach(), 5)   # packed for ~beam rows
    except (AttributeError, RuntimeError):
        return None


def linear(x: Tensor, layer: nn.Module, packed: dict) -> Tensor:
    """layer(x) for x [N, C_in] -> [N, C_out]; ``packed``: ``pack``'s weights by layer."""
    if type(layer) is not nn.Linear:
        return layer(x)
    weight = packed.get(layer)
    if type(weight) is native.Panels:
        return native.linear(x, weight)
    if x.size(0) > FEW_ROWS:
        return F.linear(x, layer.weight, layer.bias)
    if weight is not None:
        return torch.ops.mkldnn._linear_pointwise(x, weight, layer.bias, "none", [], "")
    if layer.weight.numel() < ONEDNN_WEIGHTS:
        return F.linear(x, layer.weight, layer.bias)
    if layer.bias is None:
        return torch.mm(layer.weight, x.t()).t().contiguous()                   # [out, N] -> [N, out]
    return torch.addmm(layer.bias.unsqueeze(1), layer.weight, x.t()).t().contiguous()


def fused_qkv(a: nn.Module) -> nn.Module:
    """One [3C, C] projection for an attention's q, k and v (a copy: the model's stay as they are): an
    nn.Linear, or where the three are int8 (porting/kernels/quantize.py) an int8 one."""
    parts = (a.q_proj, a.k_proj, a.v_proj)
    if all(type(p) is int8.Linear for p in parts):
        return int8.fused(parts)
    fused = nn.Linear(a.q_proj.in_features, 3 * a.q_proj.out_features).to(a.q_proj.weight.dtype)
    with torch.no_grad():
        fused.weight.copy_(torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]))
        fused.bias.copy_(torch.cat([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias]))
    return fused.requires_grad_(False)


def additive_mask(pad: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """[B, S] True at padding -> [B, 1, 1, S]: 0 where attended, -inf at padding."""
    if pad is None:
        return None
    return torch.zeros(pad.shape, dtype=dtype).masked_fill(pad, float("-inf"))[:, None, None, :]


def padded(rows: Tensor, keep: Tensor | None, n: int) -> Tensor:
    """[T, X] real tokens' rows -> [n, X] with zeros at padding (``keep``: the real rows' [T]
    positions among n); rows itself when there is no padding."""
    if keep is None:
        return rows
    return rows.new_zeros(n, rows.size(1)).index_copy_(0, keep, rows)


def appended(cache: Tensor, new: Tensor, order: Tensor | None) -> Tensor:
    """The self-attention cache [2, N', H, t, D] with its rows in ``order`` (old row per new row; None: as they
    are) and the step's keys and values [2, N, H, 1, D] after them -> [2, N, H, t + 1, D], in one copy (a
    reorder, then a concatenation, copied the cache twice a step)."""
    two, _, heads, t, d = cache.shape
    out = cache.new_empty(two, new.size(1), heads, t + 1, d)
    if order is None:
        out[:, :, :, :t] = cache
    else:
        torch.index_select(cache, 1, order, out=out[:, :, :, :t])            # written in place: the shape fits
    out[:, :, :, t:] = new
    return out


@functools.lru_cache(maxsize=None)
def _group_size(width: int) -> int:
    """The largest divisor of width up to 64 (the same few widths come back every step)."""
    return max(d for d in range(1, 65) if width % d == 0)


def top_candidates(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """torch.topk(scores, k) for scores [B, W] (a sentence's beam x vocab scores per row): the same
    k values at the same positions, except that among equal scores another may be chosen and
    ordered first. Positions are split into groups; the k best lie in at most k groups, whose
    maxima are then the k largest group maxima, so only k groups are searched in full. A group
    is every (W / g)-th position ({j, j + W/g, ...}): its maximum reduces over a middle dimension,
    which torch vectorizes along the contiguous last one (an inner reduction over a few elements
    is several times slower here)."""
    b, width = scores.shape
    g = _group_size(width)                                         # positions per group
    if g < 8 or width < 8 * k * g:                                 # nothing to gain
        return torch.topk(scores, k)
    groups = width // g
    maxima = scores.view(b, g, groups).amax(1)                               # [B, W/g]
    best = torch.topk(maxima, k, sorted=False)[1]                            # [B, k] group numbers
    # [B, k, 1] + [g] * W/g -> [B, k * g] positions in scores
    where = (best.unsqueeze(-1) + torch.arange(g) * groups).view(b, k * g)
    values, among = torch.topk(torch.gather(scores, 1, where), k)
    return values, torch.gather(where, 1, among)


@dataclass
class FastLayerCache:
    """One decoder layer's incremental state on the fast path."""
    kv: Tensor | None = None            # torch's path: self-attention keys and values so far, [2, N, H, t, D]
    enc_k: Tensor | None = None         # encoder-attention keys once per sentence, [B, H, S, D]
    enc_v: Tensor | None = None
    enc_mask: Tensor | None = None      # additive, [B, 1, 1, S] (None: no padding)
    beam: int = 0                       # rows per sentence


class FastCaches(list):
    """The decoder's ``FastLayerCache`` per layer, and what porting/kernels/skinny.c's layers keep for
    all of them together (``native.DecoderLayers``): their self-attention caches stacked, the encoder
    keys as the call takes them, and the rows the caches must follow before the next step (old row
    per new row), which the call applies while it copies the caches."""

    def __init__(self, layers: list[FastLayerCache]):
        super().__init__(layers)
        self.kv: Tensor | None = None                   # [layers, 2, N, H, t, D]
        self.keys: native.EncoderKeys | None = None     # None: (re)made from the layers' enc_k/enc_v
        self.pending_order: Tensor | None = None
        self.groups: list[attention.Group] | None = None   # torch's path: the encoder attention's groups of sentences


class FastDecoder:
    """Incremental decoding for one model, on ``FastCaches`` (``new_caches``); same
    interface as ``porting.generation.ensemble.ExactDecoder``."""

    def __init__(self, model: Transformer, use_native: bool = True):
        """use_native: porting/kernels/skinny.c's kernels where they are built (False: torch's alone,
        ``--kernels portable``)."""
        self.model = model
        self.use_native = use_native
        self.attention = attention.select(use_native)
        if use_native:
            native.warn_if_single_threaded()
        self.heads = model.arch.decoder_attention_heads
        self.qkv = [fused_qkv(layer.self_attn) for layer in model.decoder.layers]
        self.repack()

    def repack(self) -> None:
        """Derive the weight copies the step uses from the current layers (again after they are
        replaced, e.g. by int8 ones): packed float linears (``pack``), the whole-layer calls where
        every product of a layer got panels, the output projection's panels (``output_panels``, for
        the logits and ``candidates``), and where it has none, its weights laid out [in, out]: for
        many rows MKL multiplies faster by those than F.linear does (same values, bitwise equal
        results)."""
        dec = self.model.decoder
        out = dec.output_projection
        layers = [*self.qkv, out]
        for layer in dec.layers:
            layers += [layer.self_attn.out_proj, layer.fc1, layer.fc2,
                       layer.encoder_attn.q_proj, layer.encoder_attn.out_proj]
        if encoder_side_weights(self.model) <= MAX_PANEL_WEIGHTS:        # the encoder keys' projections too
            layers += [p for layer in dec.layers for p in (layer.encoder_attn.k_proj, layer.encoder_attn.v_proj)]
        self.packed = {layer: w for layer in layers if (w := pack(layer, self.use_native)) is not None}
        self.layers_c = self._whole_layers()                  # None without skinny.c: no panels
        self.output_panels = self.packed.get(out) if type(self.packed.get(out)) is native.Panels else None
        # the step's embedding in one skinny.c call, where its layers run there (float32 weights)
        embed = dec.embed_tokens.weight
        self.embedding = (native.Embedding(embed, dec.scale, dec.position_table())
                          if self.layers_c is not None and embed.dtype == torch.float32 else None)
        # the whole search as one skinny_search.c call where every part of the step runs there
        self.native_search = None
        if self.layers_c is not None and self.embedding is not None and self.output_panels is not None:
            self.native_search = native.Search(self.layers_c, self.embedding, self.output_panels, dec.layer_norm,
                                               dec.layernorm_embedding, PAD, UNK)
        self.output_t = None
        if type(out) is nn.Linear and self.output_panels is None:
            self.output_t = out.weight.detach().t().contiguous()                          # [C, V]

    def _whole_layers(self) -> native.DecoderLayers | None:
        """The layers as one porting/kernels/skinny.c call for few rows, where every product is a float32
        nn.Linear packed as panels (not after int8 quantization) and the activation is relu or gelu."""
        layers = []
        for layer, qkv in zip(self.model.decoder.layers, self.qkv):
            linears = {"qkv": qkv, "self_out": layer.self_attn.out_proj, "q": layer.encoder_attn.q_proj,
                       "cross_out": layer.encoder_attn.out_proj, "fc1": layer.fc1, "fc2": layer.fc2}
            panels = {name: self.packed.get(lin) for name, lin in linears.items()}
            if any(type(p) is not native.Panels for p in panels.values()) or not native.activation_supported(layer.activation):
                return None
            norms = {"self_ln": layer.self_attn_layer_norm, "cross_ln": layer.encoder_attn_layer_norm,
                     "final_ln": layer.final_layer_norm}
            layers.append(native.Layer(panels, norms, layer.fc1.out_features, self.heads, layer.pre, layer.activation,
                                       layer.self_attn.scaling))
        return native.DecoderLayers(layers)

    def new_caches(self) -> FastCaches:
        return FastCaches([FastLayerCache() for _ in self.model.decoder.layers])

    def step(self, prev: Tensor, enc: EncoderOut, caches: FastCaches) -> Tensor:
        """prev [N, t] (all tokens so far), enc per sentence (B = N / beam) -> logits [N, V]."""
        return self.logits(self.hidden(prev, enc, caches))

    def hidden(self, prev: Tensor, enc: EncoderOut, caches: FastCaches) -> Tensor:
        """The step up to the output projection: prev [N, t] -> the last states [N, C] (after the
        decoder's final layer norm, where it has one)."""
        dec = self.model.decoder
        n, t = prev.shape
        x = self._embed(prev[:, -1], t)                                    # [N, C]
        if self.layers_c is not None:                                    # panels exist for float32 only
            # _embed's result is a tensor of its own (never a view of a weight): the layers update it in place
            x = x.detach().contiguous()
            if caches.keys is None:                                      # the first step, or sentences left
                caches.keys = self._encoder_keys(enc, caches, n)
            caches.kv, caches.pending_order = self.layers_c(x, caches.kv, caches.pending_order, caches.keys), None
        else:
            for layer, cache in zip(dec.layers, caches):
                self._encoder_cache(layer.encoder_attn, enc, cache, n)
            if caches.groups is None:                                    # the first step: every sentence
                caches.groups = attention.groups(enc.pad_mask, self.heads, caches[0].beam)
            order, caches.pending_order = caches.pending_order, None     # followed as the caches grow
            for layer, qkv, cache in zip(dec.layers, self.qkv, caches):
                x = residual_block(x, layer.self_attn_layer_norm,
                                   lambda h: self._self_attn(layer, qkv, h, cache, order), layer.pre)
                x = residual_block(x, layer.encoder_attn_layer_norm,
                                   lambda h: self._cross_attn(layer, h, cache, caches.groups), layer.pre)
                x = residual_block(x, layer.final_layer_norm,
                                   lambda h: self._linear(layer.act(self._linear(h, layer.fc1)), layer.fc2), layer.pre)
        return x if dec.layer_norm is None else self._norm(dec.layer_norm, x)

    def _norm(self, norm: nn.LayerNorm, x: Tensor) -> Tensor:
        """A decoder layer norm outside the layers (the final one, BART's on the embedding): where the layers
        run in skinny.c, its arithmetic too, as native.Search's; else the module."""
        return native.layer_norm(x, norm) if self.layers_c is not None else norm(x)

    def _encoder_keys(self, enc: EncoderOut, caches: FastCaches, n: int) -> native.EncoderKeys:
        """Each layer's encoder keys and values as skinny.c's calls take them, for n rows (the caches'
        own tensors, made here where they are missing)."""
        for layer, cache in zip(self.model.decoder.layers, caches):
            self._encoder_cache(layer.encoder_attn, enc, cache, n)
        return self.layers_c.encoder_keys([c.enc_k for c in caches], [c.enc_v for c in caches], caches[0].enc_mask)

    def search(self, enc: EncoderOut, beam: int, limits: list[int], min_len: int, unkpen: float, bos: int, end: int,
               prefix: tuple[int, ...]) -> list[list[tuple[list[int], float, list[float]]]] | None:
        """The whole search in one porting/kernels/skinny.c call (``native.Search``, whose result this is);
        None where it does not run here (the step not whole in the kernels, positions beyond the table)
        or a step must be decided by torch's path."""
        if self.native_search is None or not self.native_search.fits(limits):
            return None
        # fresh caches' own tensors (contiguous already): the call compacts them as sentences finish
        keys = self._encoder_keys(enc, self.new_caches(), enc.out.size(1) * beam)
        return self.native_search(keys, beam, limits, min_len, unkpen, bos, end, prefix)

    def _embed(self, last: Tensor, t: int) -> Tensor:
        """The embeddings of the last tokens [N] at step t (every row at position PAD + t: no padding
        while generating): ``Embeddings.forward``'s operations on one position row, in one
        porting/kernels/skinny.c call where it is built; bitwise the same values."""
        dec = self.model.decoder
        if self.embedding is not None and PAD + t < self.embedding.rows:     # skinny.c is there: one call
            x = self.embedding(last, PAD + t)
        else:
            table = dec.position_table()
            if PAD + t >= table.size(0):                                  # its errors, and its table extension
                return Embeddings.forward(dec, last[:, None], torch.full((last.numel(), 1), PAD + t))[:, 0]
            x = dec.scale * F.embedding(last, dec.embed_tokens.weight) + table[PAD + t]
        return x if dec.layernorm_embedding is None else self._norm(dec.layernorm_embedding, x)

    def logits(self, x: Tensor) -> Tensor:
        """``hidden``'s [N, C] -> logits [N, V]."""
        if self.output_t is not None and x.size(0) > FEW_ROWS:
            return torch.mm(x, self.output_t)                               # [N, C] x [C, V]
        return self._linear(x, self.model.decoder.output_projection)

    def candidates(self, x: Tensor, prev_scores: Tensor | None, group: int, count: int,
                   **rules) -> tuple[Tensor, Tensor] | None:
        """The search's `count` best continuations per sentence straight from ``hidden``'s states
        (``native.candidates``, whose arguments these are); None where there are no output panels
        (int8 output projection, no porting/kernels/skinny.c) or the kernel hands the step back."""
        if self.output_panels is None:
            return None
        return native.candidates(x, self.output_panels, prev_scores, group, count, **rules)

    def _linear(self, x: Tensor, layer: nn.Module) -> Tensor:
        return linear(x, layer, self.packed)

    def _self_attn(self, layer, qkv: nn.Module, h: Tensor, cache: FastLayerCache, order: Tensor | None) -> Tensor:
        a = layer.self_attn
        n, c = h.shape
        q, kv = self._linear(h, qkv).split((c, 2 * c), dim=1)                    # [N, C], [N, 2C]
        q = (q * a.scaling).view(n, self.heads, 1, -1)                      # [N, H, 1, D]
        # keys first, then values: [N, 2C] -> [N, 2, H, 1, D] -> [2, N, H, 1, D], so that the keys
        # and the values are each contiguous (attention reads them without a copy)
        kv = kv.view(n, 2, self.heads, 1, -1).transpose(0, 1)
        if cache.kv is not None:
            kv = appended(cache.kv, kv, order)                              # [2, N, H, t, D]
        cache.kv = kv
        out = self.attention(q, kv[0], kv[1])                                    # [N, H, 1, D]
        return self._linear(out.view(n, c), a.out_proj)

    def _cross_attn(self, layer, h: Tensor, cache: FastLayerCache, runs: list[attention.Group]) -> Tensor:
        a = layer.encoder_attn
        n, c = h.shape
        k, v, mask = cache.enc_k, cache.enc_v, cache.enc_mask
        b, beam = k.size(0), cache.beam
        q = (self._linear(h, a.q_proj) * a.scaling).view(b, beam, self.heads, -1).transpose(1, 2)  # [B, H, beam, D]
        parts = attention.grouped(self.attention, q, k, v, mask, runs, trim_queries=False)       # [b, H, beam, D] each
        out = parts[0] if len(parts) == 1 else torch.cat(parts)                                # [B, H, beam, D]
        return self._linear(out.transpose(1, 2).reshape(n, c), a.out_proj)

    def _encoder_cache(self, a: nn.Module, enc: EncoderOut, cache: FastLayerCache, n: int) -> None:
        if cache.enc_k is None:                                             # first step: one copy per sentence
            cache.enc_k, cache.enc_v = self._encoder_keys_values(a, enc)     # [B, H, S, D] each
            cache.enc_mask = additive_mask(enc.pad_mask, cache.enc_k.dtype)  # [B, 1, 1, S]
            cache.beam = n // cache.enc_k.size(0)

    def _encoder_keys_values(self, a: nn.Module, enc: EncoderOut) -> tuple[Tensor, Tensor]:
        s, b, c = enc.out.shape
        if enc.kept is None:
            # [S, B, C] -> [S*B, C] -> (projected) [S, B, H, D] -> [B, H, S, D]
            flat = enc.out.reshape(s * b, c)
            return tuple(self._linear(flat, p).view(s, b, self.heads, -1).permute(1, 2, 0, 3).contiguous()
                         for p in (a.k_proj, a.v_proj))
        # real tokens only (porting/kernels/fast_encoder.py): [T, C] -> zeros at padding [B*S, C]
        # -> [B, S, H, D] -> [B, H, S, D]; padded keys are masked out of every attention
        rows, keep = enc.kept
        return tuple(padded(self._linear(rows, p), keep, b * s).view(b, s, self.heads, -1).transpose(1, 2).contiguous()
                     for p in (a.k_proj, a.v_proj))

    @staticmethod
    def for_beam(enc: EncoderOut, beam: int) -> EncoderOut:
        """One copy per sentence: the beam rows of a sentence attend to it together."""
        return enc

    def reorder(self, caches: FastCaches, order: Tensor) -> None:
        """Follow the surviving hypotheses (order: old row per new row). The next step follows `order` as it
        copies the self-attention caches to append its own keys and values (``hidden``: porting/kernels/skinny.c's
        layers, or torch's path through ``appended``), one copy a step instead of two. Encoder keys/values are
        per sentence, so they change only when sentences leave: every new sentence's rows come from one old
        sentence."""
        caches.pending_order = order
        beam = caches[0].beam
        if caches[0].enc_k.size(0) * beam == order.numel():           # the same sentences
            return
        sentences = order.view(-1, beam)[:, 0] // beam
        for cache in caches:
            cache.enc_k = cache.enc_k.index_select(0, sentences)
            cache.enc_v = cache.enc_v.index_select(0, sentences)
            if cache.enc_mask is not None:
                cache.enc_mask = cache.enc_mask.index_select(0, sentences)
        caches.keys = None
        if caches.groups is not None:                                  # the sentences left: [B', S] True at padding
            pad = None if caches[0].enc_mask is None else caches[0].enc_mask[:, 0, 0].isinf()
            caches.groups = attention.kept(caches.groups, sentences.tolist(), pad)
