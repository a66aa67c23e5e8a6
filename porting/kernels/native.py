"""The compiled kernels' Python side: products (``linear``), attention (``attention``), embeddings
(``Embedding``), the decoder's and the encoder's layers in one call each (``DecoderLayers``,
``EncoderLayers``) from porting/kernels/skinny.c, and the output projection fused with the search's
candidate selection (``candidates``) from skinny_candidates.c. Why they are written by hand: see
there. Building them: porting/kernels/build.py (an AVX2 and an AVX-512 build of the same C, bitwise
alike; the CPU's widest is loaded).

Where they cannot be built or loaded (no x86-64 with AVX2/FMA, no compiler, an unsafe cache, or
``PORTING_NATIVE=0``), ``available()`` is False, ``unavailable_reason()`` says why (and a
RuntimeWarning says it once, unless it was turned off on purpose), and the fast kernels use torch's
instead (same hypotheses, slower: the parity suites run that path too, as ``--kernels portable``).
Loading the library and checking its ABI (``struct layer``, ``struct decoder``, every entry point's
signature) is porting/kernels/library.py's, which needs no torch.
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from porting.kernels.library import (  # noqa: F401  (the library's names, as this module's callers know them)
    PANEL,
    _Decoder,
    _Layer,
    _openmp,
    abi_mismatch,
    activation_supported,
    available,
    describe,
    isa,
    pack_panels,
    search_results,
    threaded,
    unavailable_reason,
)
from porting.kernels.library import load as _load
from porting.model.activation import Activation


@functools.cache
def warn_if_single_threaded() -> None:
    if available() and not threaded() and torch.get_num_threads() > 1:
        warnings.warn(f"porting: torch does not run on GNU OpenMP here, so the compiled kernels use one thread "
                      f"of {torch.get_num_threads()} (slower on large batches)", RuntimeWarning, stacklevel=3)


@dataclass(frozen=True)
class Panels:
    """A linear layer's weights packed for skinny.c: [ceil(n / 16), k, 16], zero-padded; bias
    zero-padded to the same width (or None)."""
    panels: Tensor
    bias: Tensor | None
    out_features: int
    in_features: int


def pack(weight: Tensor, bias: Tensor | None) -> Panels:
    """weight [n, k] (and bias [n]) float32 -> Panels (``library.pack_panels``)."""
    panels, b = pack_panels(weight.detach().numpy(), None if bias is None else bias.detach().numpy())
    return Panels(torch.from_numpy(panels), None if b is None else torch.from_numpy(b), *weight.shape)


def linear(x: Tensor, p: Panels) -> Tensor:
    """x [m, k] float32 -> [m, n]; ``available()`` must be True. Large products are split between
    torch's threads (skinny.c's THREADED_MACS)."""
    m, k = x.shape
    if k != p.in_features or x.dtype != torch.float32:
        raise ValueError(f"native.linear: x {tuple(x.shape)} {x.dtype} for a float32 {p.in_features} -> "
                         f"{p.out_features} layer")
    x = x.contiguous()
    y = torch.empty(m, p.out_features)
    args = (x.data_ptr(), p.panels.data_ptr(), None if p.bias is None else p.bias.data_ptr(), y.data_ptr(),
            m, k, p.out_features)
    _load()[0].skinny_linear_threads(*args, *_openmp(), torch.get_num_threads())
    return y


class Embedding:
    """``scale * table[tokens] + positions[row]`` as one skinny.c call (``skinny_embed``), bitwise as
    torch computes it: the decoder step's embedding, its tensors checked once (not once a step).
    table [V, C] and positions [P, C] float32; ``available()`` must be True."""

    def __init__(self, table: Tensor, scale: float, positions: Tensor):
        if (table.dim() != 2 or positions.dim() != 2 or table.size(1) != positions.size(1)
                or table.dtype != torch.float32 or positions.dtype != torch.float32):
            raise ValueError(f"native.Embedding: table {tuple(table.shape)} {table.dtype}, positions "
                             f"{tuple(positions.shape)} {positions.dtype}: want float32 [V, C] and [P, C]")
        self.table, self.positions = table.detach().contiguous(), positions.detach().contiguous()
        self.scale = scale
        self.vocab, self.c = table.shape
        self.rows = positions.size(0)

    def __call__(self, tokens: Tensor, row: int) -> Tensor:
        """tokens [N] int64, row < P -> [N, C]."""
        if tokens.dtype != torch.long or tokens.dim() != 1 or not 0 <= row < self.rows:
            raise ValueError(f"native.Embedding: tokens {tuple(tokens.shape)} {tokens.dtype}, position row {row} "
                             f"of {self.rows}")
        tokens = tokens.contiguous()
        n = tokens.numel()
        x = torch.empty(n, self.c)
        position = self.positions.data_ptr() + row * self.c * self.positions.element_size()
        if _load()[0].skinny_embed(tokens.data_ptr(), n, self.table.data_ptr(), self.vocab, self.c, self.scale,
                                   position, x.data_ptr()):
            raise IndexError(f"native.Embedding: a token id outside 0..{self.vocab - 1}")
        return x


def layer_norm(x: Tensor, norm: nn.LayerNorm) -> Tensor:
    """norm(x) for x [N, C] float32 as skinny.c's layers compute their norms (moments in double): the
    decoder's final norm, alike in the step and in ``Search``; ``available()`` must be True."""
    n, c = x.shape
    if x.dtype != torch.float32 or norm.weight is None or norm.bias is None or norm.weight.shape != (c,):
        raise ValueError(f"native.layer_norm: x {tuple(x.shape)} {x.dtype} for a norm of "
                         f"{None if norm.weight is None else tuple(norm.weight.shape)} with weights and biases")
    x = x.contiguous()
    y = torch.empty(n, c)
    _load()[0].skinny_layer_norm(x.data_ptr(), y.data_ptr(), n, c, norm.weight.data_ptr(), norm.bias.data_ptr(), norm.eps)
    return y


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """softmax(q k^T + mask) v for q [N, H, Q, D] (already scaled), k and v [N, H, T, D], mask additive
    (0 or -inf) [N, 1, 1, T] or None -> [N, H, Q, D], float32; ``available()`` must be True."""
    n, heads, rows, dim = q.shape
    keys = k.size(2)
    if (k.shape != (n, heads, keys, dim) or v.shape != k.shape or (mask is not None and mask.shape != (n, 1, 1, keys))
            or any(t is not None and t.dtype != torch.float32 for t in (q, k, v, mask))):
        raise ValueError(f"native.attention: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, mask "
                         f"{None if mask is None else tuple(mask.shape)}: "
                         "want float32 [N, H, Q, D], [N, H, T, D] x2, [N, 1, 1, T]")
    q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
    mask = None if mask is None else mask.contiguous()
    out = torch.empty(n, heads, rows, dim)
    _load()[0].skinny_attention(q.data_ptr(), k.data_ptr(), v.data_ptr(), None if mask is None else mask.data_ptr(),
                                out.data_ptr(), n * heads, rows, keys, dim, heads)
    return out


def candidates(x: Tensor, p: Panels, prev: Tensor | None, group: int, count: int, *, pad: int, unk: int, eos: int,
               unkpen: float = 0.0, ban_eos: bool = False, forced: Tensor | None = None) -> tuple[Tensor, Tensor] | None:
    """A beam-search step's candidates straight from the decoder's last states (porting/kernels/skinny_candidates.c):
    x [m, k] float32 with `group` rows per sentence, p the output projection's panels, prev [m]
    the rows' cumulative scores (None: nothing added) -> the `count` best (scores, flat indices
    row_in_group * n + token) per sentence, [m / group, count] each, best first: torch.topk over
    log_softmax(x W^T + b) + prev per sentence, with <pad> never chosen, unkpen subtracted from
    <unk> and </s> never chosen when ``ban_eos``. forced [m / group] int64: the one token a sentence
    may take (its rows' candidates only, the rest -inf at flat index `pad`), -1 for none. None where
    torch's path must decide (a NaN or infinite logit, or fewer than `count` finite candidates in a
    sentence not forced). ``available()`` must be True."""
    m, k = x.shape
    if (k != p.in_features or x.dtype != torch.float32 or group < 1 or m % group or not 1 <= count <= group * p.out_features
            or (prev is not None and (prev.shape != (m,) or prev.dtype != torch.float32))
            or (forced is not None and (forced.shape != (m // group,) or forced.dtype != torch.long))):
        raise ValueError(f"native.candidates: x {tuple(x.shape)} {x.dtype}, prev {None if prev is None else tuple(prev.shape)}, "
                         f"forced {None if forced is None else tuple(forced.shape)}, {group} rows per sentence, "
                         f"{count} candidates for a float32 {p.in_features} -> {p.out_features} layer")
    x = x.contiguous()
    prev = None if prev is None else prev.contiguous()
    forced = None if forced is None else forced.contiguous()
    scores, index = torch.empty(m // group, count), torch.empty(m // group, count, dtype=torch.long)
    gomp, thread_num = _openmp()
    status = _load()[0].skinny_candidates(
        x.data_ptr(), p.panels.data_ptr(), None if p.bias is None else p.bias.data_ptr(), m, k, p.out_features,
        None if prev is None else prev.data_ptr(), group, count, pad, unk, eos, unkpen, int(ban_eos),
        None if forced is None else forced.data_ptr(), scores.data_ptr(), index.data_ptr(), gomp, thread_num,
        torch.get_num_threads())
    if status == -2:
        raise ValueError(f"native.candidates: a forced token outside -1..{p.out_features - 1}")
    if status < 0:
        raise MemoryError("native.candidates: no scratch memory")
    return (scores, index) if status == 0 else None


class Layer:
    """One layer's weights as skinny.c's ``struct layer`` reads them (the tensors are kept here: the
    struct holds only their addresses). A decoder layer has every field; an encoder layer no encoder
    attention (no "q", "cross_out", "cross_ln": those fields stay NULL). ``DecoderLayers`` and
    ``EncoderLayers`` run them."""

    def __init__(self, linears: dict[str, Panels], norms: dict[str, nn.LayerNorm], ffn: int, heads: int,
                 pre_norm: bool, activation: Activation, scaling: float):
        self.c = linears["qkv"].in_features
        if not activation_supported(activation):
            raise ValueError(f"native.Layer: skinny.c has no case for activation {activation.fairseq_name}")
        if self.c % heads or any(p.bias is None for p in linears.values()):
            raise ValueError("native.Layer: width must divide into heads, and every linear layer needs a bias")
        eps = {n.eps for n in norms.values()}
        if len(eps) != 1 or any(n.weight is None or n.bias is None or n.weight.dtype != torch.float32 for n in norms.values()):
            raise ValueError("native.Layer: float32 layer norms with weights and one eps")
        self.keep: list = [*linears.values()]          # the struct holds addresses only
        fields = {}
        for name, p in linears.items():
            fields[f"{name}_w"], fields[f"{name}_b"] = p.panels.data_ptr(), p.bias.data_ptr()
        for name, norm in norms.items():
            w, b = norm.weight.detach().contiguous(), norm.bias.detach().contiguous()
            self.keep += [w, b]
            fields[f"{name}_w"], fields[f"{name}_b"] = w.data_ptr(), b.data_ptr()
        self.struct = _Layer(**fields, c=self.c, ffn=ffn, heads=heads, pre_norm=int(pre_norm), activation=activation.code,
                             scaling=scaling, eps=eps.pop())
        self.heads = heads
        self.encoder_only = "q" not in linears


class _Layers:
    """Layers of one width and head count as skinny.c's array of ``struct layer``."""

    def __init__(self, layers: list[Layer], encoder: bool):
        if len({(layer.c, layer.heads) for layer in layers}) != 1:
            raise ValueError(f"native.{type(self).__name__}: every layer of one width and head count")
        if not encoder and any(layer.encoder_only for layer in layers):
            raise ValueError("native.DecoderLayers: a layer without encoder attention")
        self.layers = layers
        self.c, self.heads = layers[0].c, layers[0].heads
        self.structs = (_Layer * len(layers))(*(layer.struct for layer in layers))

    def _raise_for(self, status: int, out_of_range: str) -> None:
        """The C call's status as an error (0: none); out_of_range: what -2 means for this call."""
        name = f"native.{type(self).__name__}"
        if status == -2:
            raise ValueError(f"{name}: {out_of_range}")
        if status == -3:
            raise ValueError(f"{name}: an activation skinny.c has no case for")
        if status:
            raise MemoryError(f"{name}: no scratch memory")


class EncoderLayers(_Layers):
    """An encoder's layers as one skinny.c call (``skinny_encoder_layers``), on the real tokens alone:
    at batch 1 a layer was ~30 torch calls whose glue cost more than their products."""

    def __init__(self, layers: list[Layer]):
        super().__init__(layers, encoder=True)

    def __call__(self, x: Tensor, keep: Tensor | None, sentences: int, src_len: int, mask: Tensor | None) -> None:
        """x [T, C] float32 contiguous, the real tokens' states, updated in place; keep [T] int64: their
        increasing positions in the padded batch-major [sentences * src_len] order (None: no padding);
        mask additive [sentences, 1, 1, src_len] or None."""
        rows, c = x.shape
        if (c != self.c or not x.is_contiguous() or x.dtype != torch.float32
                or (keep is None and rows != sentences * src_len)
                or (keep is not None and (keep.shape != (rows,) or keep.dtype != torch.long))
                or (mask is not None and (mask.shape != (sentences, 1, 1, src_len) or mask.dtype != torch.float32))):
            raise ValueError(f"native.EncoderLayers: x {tuple(x.shape)}, keep {None if keep is None else tuple(keep.shape)}, "
                             f"mask {None if mask is None else tuple(mask.shape)} do not fit {sentences} sentences of "
                             f"{src_len} positions through {len(self.layers)} {self.c}-wide layers")
        keep = None if keep is None else keep.contiguous()
        mask = None if mask is None else mask.contiguous()
        gomp, thread_num = _openmp()
        status = _load()[0].skinny_encoder_layers(
            self.structs, len(self.layers), x.data_ptr(), rows, None if keep is None else keep.data_ptr(), sentences,
            src_len, None if mask is None else mask.data_ptr(), gomp, thread_num, torch.get_num_threads())
        self._raise_for(status, f"keep has positions outside 0..{sentences * src_len - 1}")


@dataclass(frozen=True)
class EncoderKeys:
    """Each layer's encoder keys and values as ``DecoderLayers`` passes them, checked and laid out once per
    encoder output (not once a step): k, v [B, H, S, D] per layer, mask additive [B, 1, 1, S] or None."""
    k: list[Tensor]
    v: list[Tensor]
    mask: Tensor | None
    k_pointers: ctypes.Array
    v_pointers: ctypes.Array

    @property
    def sentences(self) -> int:
        return self.k[0].size(0)

    @property
    def length(self) -> int:
        return self.k[0].size(2)


class DecoderLayers(_Layers):
    """A decoder's layers as one skinny.c call a step (``skinny_decoder_layers``): at batch 1 the
    per-layer Python calls and the search's cache reordering cost as much as a layer's arithmetic.
    The layers' caches travel stacked, [count, 2, N, H, t, D]: one tensor a step for all of them."""

    def __init__(self, layers: list[Layer]):
        super().__init__(layers, encoder=False)

    def encoder_keys(self, k: list[Tensor], v: list[Tensor], mask: Tensor | None) -> EncoderKeys:
        """Each layer's encoder keys and values [B, H, S, D] and the additive mask [B, 1, 1, S] (or None),
        checked and made contiguous for ``__call__``."""
        count, d = len(self.layers), self.c // self.heads
        shape = k[0].shape
        if (len(k) != count or len(v) != count or len(shape) != 4 or shape[1:2] + shape[3:] != (self.heads, d)
                or any(t.shape != shape or t.dtype != torch.float32 for t in (*k, *v))
                or (mask is not None and (mask.shape != (shape[0], 1, 1, shape[2]) or mask.dtype != torch.float32))):
            raise ValueError(f"native.DecoderLayers: encoder keys {[tuple(t.shape) for t in k]}, values "
                             f"{[tuple(t.shape) for t in v]}, mask {None if mask is None else tuple(mask.shape)} do not "
                             f"fit {count} {self.c}-wide layers of {self.heads} heads")
        k, v = [t.contiguous() for t in k], [t.contiguous() for t in v]
        pointers = ctypes.c_void_p * count
        return EncoderKeys(k, v, None if mask is None else mask.contiguous(), pointers(*(t.data_ptr() for t in k)),
                           pointers(*(t.data_ptr() for t in v)))

    def __call__(self, x: Tensor, kv: Tensor | None, order: Tensor | None, keys: EncoderKeys) -> Tensor:
        """x [N, C] float32 contiguous, updated in place; kv: the layers' caches [count, 2, N_old, H, t, D]
        (None at the first step); order [N] int64: the old row each row follows (None: row r follows
        row r, N_old = N); keys: ``encoder_keys`` -> the layers' new caches [count, 2, N, H, t + 1, D]."""
        n, c = x.shape
        count, heads, d = len(self.layers), self.heads, self.c // self.heads
        t = 0 if kv is None else kv.size(4)
        n_old = n if kv is None else kv.size(2)
        b = keys.sentences
        if (c != self.c or not x.is_contiguous() or x.dtype != torch.float32 or n % b
                or (kv is not None and (kv.shape != (count, 2, n_old, heads, t, d) or kv.dtype != torch.float32))
                or (order is None and n_old != n) or (order is not None and (order.shape != (n,) or order.dtype != torch.long))):
            raise ValueError(f"native.DecoderLayers: x {tuple(x.shape)}, kv {None if kv is None else tuple(kv.shape)}, "
                             f"order {None if order is None else tuple(order.shape)}, {b} sentences' encoder keys "
                             f"do not fit {count} {self.c}-wide layers of {self.heads} heads")
        kv = None if kv is None else kv.contiguous()
        order = None if order is None else order.contiguous()
        new = torch.empty(count, 2, n, heads, t + 1, d)
        gomp, thread_num = _openmp()
        status = _load()[0].skinny_decoder_layers(
            self.structs, count, x.data_ptr(), n, t, None if kv is None else kv.data_ptr(), n_old,
            None if order is None else order.data_ptr(), new.data_ptr(), keys.k_pointers, keys.v_pointers,
            None if keys.mask is None else keys.mask.data_ptr(), b, keys.length, gomp, thread_num, torch.get_num_threads())
        self._raise_for(status, f"order has rows outside 0..{n_old - 1}")
        return new


class Search:
    """The beam search's loop for one model as one skinny_search.c call (fairseq's stopping rule, no
    n-gram blocking): the decoder's layers, its embedding and the embedding's layer norm (or none), its
    final norm (or none) and its output projection's panels. porting/generation/beam.py's search is its
    reference."""

    def __init__(self, layers: DecoderLayers, embedding: Embedding, output: Panels, norm: nn.LayerNorm | None,
                 embed_norm: nn.LayerNorm | None, pad: int, unk: int):
        if embedding.c != layers.c or output.in_features != layers.c or output.out_features != embedding.vocab:
            raise ValueError(f"native.Search: an embedding {embedding.vocab} x {embedding.c}, {layers.c}-wide layers "
                             f"and an output projection {output.in_features} -> {output.out_features} do not fit")
        if any(n is not None and (n.weight is None or n.bias is None or n.weight.dtype != torch.float32
                                  or n.weight.shape != (layers.c,)) for n in (norm, embed_norm)):
            raise ValueError(f"native.Search: layer norms need {layers.c} float32 weights and biases")
        # kept: the struct holds addresses only
        self.layers, self.embedding, self.output, self.norms = layers, embedding, output, (norm, embed_norm)
        self.struct = _Decoder(
            layers=ctypes.cast(layers.structs, ctypes.c_void_p), embed=embedding.table.data_ptr(),
            positions=embedding.positions.data_ptr(), out_w=output.panels.data_ptr(),
            out_b=None if output.bias is None else output.bias.data_ptr(),
            norm_w=None if norm is None else norm.weight.data_ptr(), norm_b=None if norm is None else norm.bias.data_ptr(),
            embed_norm_w=None if embed_norm is None else embed_norm.weight.data_ptr(),
            embed_norm_b=None if embed_norm is None else embed_norm.bias.data_ptr(),
            count=len(layers.layers), vocab=embedding.vocab, c=layers.c, heads=layers.heads,
            position_rows=embedding.rows, pad=pad, unk=unk, scale=embedding.scale, norm_eps=0.0 if norm is None else norm.eps,
            embed_norm_eps=0.0 if embed_norm is None else embed_norm.eps)

    def fits(self, limits: list[int]) -> bool:
        """Whether the position table holds every step these limits allow (else torch's extension runs)."""
        return self.struct.pad + max(limits) + 1 < self.embedding.rows

    def __call__(self, keys: EncoderKeys, beam: int, limits: list[int], min_len: int, unkpen: float, bos: int,
                 end: int, prefix: tuple[int, ...] = ()) -> list[list[tuple[list[int], float, list[float]]]] | None:
        """Each sentence's hypotheses in the order they ended, (tokens ending with `end`, the cumulative score
        (not yet divided by length ** lenpen), per-position scores), from its encoder keys (``DecoderLayers.encoder_keys``:
        overwritten, as sentences finish); None where a step must be decided by torch's path (the kernel's
        hand-back: the caller runs beam.py's search instead)."""
        b, width = keys.sentences, max(limits) + 1
        if len(limits) != b or beam < 1 or not self.fits(limits):
            raise ValueError(f"native.Search: {len(limits)} limits for {b} sentences, beam {beam}, "
                             f"at most {self.embedding.rows - self.struct.pad - 2} steps")
        tokens = torch.empty(b, beam, width, dtype=torch.long)
        positional, scores = torch.empty(b, beam, width), torch.empty(b, beam)
        lengths, counts = torch.empty(b, beam, dtype=torch.int32), torch.empty(b, dtype=torch.int32)
        c_limits = (ctypes.c_int * b)(*limits)
        c_prefix = (ctypes.c_int64 * max(1, len(prefix)))(*prefix)
        gomp, thread_num = _openmp()
        status = _load()[0].skinny_search(
            ctypes.byref(self.struct), keys.k_pointers, keys.v_pointers, None if keys.mask is None else keys.mask.data_ptr(),
            b, keys.length, beam, c_limits, min_len, unkpen, bos, end, c_prefix, len(prefix), tokens.data_ptr(),
            positional.data_ptr(), scores.data_ptr(), lengths.data_ptr(), counts.data_ptr(), gomp, thread_num,
            torch.get_num_threads())
        if status == 1:
            return None
        if status == -4:
            raise RuntimeError("native.Search: a sentence still going at its max_len (a broken invariant)")
        self.layers._raise_for(status, "a position beyond the table or a token outside the vocabulary")
        return search_results(tokens, positional, scores, lengths, counts)
