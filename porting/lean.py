"""The start-up path: one converted model translated on numpy and the compiled kernels, in a process that
never imports torch (torch's import alone takes ~1.8 s here; one line through ``porting translate`` should
take well under a second as a whole process).

It is the fast kernels' path (porting/kernels/fast_encoder.py, fast_decoder.py and the search's loop in
porting/kernels/skinny_search.c) call for call, on the same compiled library (porting/kernels/library.py):
the encoder's embedding as torch computes it (``scale * table[ids] + positions``: two float32 roundings),
its layers, its layer norms and the decoder's encoder keys' projections in skinny.c, then the whole search
in one ``skinny_search`` call and fairseq's normalisation of finalised scores, on torch's OpenMP runtime
and torch's number of threads (``Threads``: a reduction split between threads sums in another order). So
its hypotheses and scores are bitwise those of ``Translator(kernels="fast")`` (tests/test_lean.py, every
shipped single model and setting), with one condition: a sinusoidal model's position table is the one the
converter stored (torch's, computed on the converting machine), where the torch path recomputes it on this
one; where they differ (in the last bits: ``porting.model.load.table_tolerance``) so may the scores
(porting/NOTES.md). A model whose table is not stored (M2M-100's) runs on torch.

It runs only where all of that holds (``why_not``): the kernels built, one model of float32 weights, the
encoder's side within the panels' budget (``fast_decoder.MAX_PANEL_WEIGHTS``), fairseq's stopping rule and
no n-gram blocking, positions within the tables; anything else (an ensemble, int8, bfloat16, other kernel
sets, a model that fails a check) runs on torch, which also reports what is wrong with a bad model; so does
a batch it cannot run (``LeanTranslator``).
"""
from __future__ import annotations

import ctypes
import logging
import math
import time
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file

from porting.format import PAD, UNK, Arch, read_config, vocab_sizes
from porting.generation.options import GenerationOptions
from porting.generation.results import Hypothesis, best_first, length_limits
from porting.kernels import library
from porting.kernels.library import _Decoder, _Layer
from porting.model.activation import Activation
from porting.model.layout import PREFIX, expected_shapes
from porting.tokenizer import open_tokenizer
from porting.translation import LineTranslator, default_options

LAYER_NORM_EPS = 1e-5              # porting.model.transformer's (fairseq's LayerNorm): that module imports torch
MAX_PANEL_WEIGHTS = 1 << 24        # porting.kernels.fast_decoder's (tests/test_lean.py checks they agree)

log = logging.getLogger(__name__)


def _address(a: np.ndarray | None) -> int | None:
    return None if a is None else a.ctypes.data


class Threads:
    """The kernels' threads: torch's OpenMP runtime (``library.load_torch_openmp``) and torch's count of them
    (``library.default_threads``, or the caller's): the kernels' results depend on the count, so it is torch's.
    Process-wide, as torch.set_num_threads is."""
    count = 1

    @classmethod
    def use(cls, count: int | None) -> None:
        if not library.load_torch_openmp():
            raise Unsupported("torch's OpenMP runtime is not there to load")
        cls.count = count or library.default_threads()

    @classmethod
    def arguments(cls) -> tuple:
        """The last three arguments of every threaded kernel: GOMP_parallel, omp_get_thread_num, the count."""
        return (*library._openmp(), cls.count)


class Panels:
    """A linear layer's weights [n, k] (and bias [n]) packed as skinny.c reads them, as
    ``porting.kernels.native.pack`` packs a tensor: [ceil(n / 16), k, 16], zero-padded."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray | None):
        self.panels, self.bias = library.pack_panels(weight, bias)
        self.out_features, self.in_features = weight.shape

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x [m, k] float32 -> [m, n] (``skinny_linear_threads``, on the kernels' threads)."""
        x = np.ascontiguousarray(x)
        y = np.empty((x.shape[0], self.out_features), np.float32)
        library.load()[0].skinny_linear_threads(x.ctypes.data, self.panels.ctypes.data, _address(self.bias),
                                                y.ctypes.data, x.shape[0], self.in_features, self.out_features,
                                                *Threads.arguments())
        return y


class Norm:
    """A layer norm's weights, run as skinny.c's (``skinny_layer_norm``: moments in double)."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray):
        self.weight, self.bias = np.ascontiguousarray(weight), np.ascontiguousarray(bias)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x [N, C] float32 -> [N, C]."""
        x = np.ascontiguousarray(x)
        y = np.empty_like(x)
        library.load()[0].skinny_layer_norm(x.ctypes.data, y.ctypes.data, x.shape[0], x.shape[1],
                                            self.weight.ctypes.data, self.bias.ctypes.data, LAYER_NORM_EPS)
        return y


class Unsupported(Exception):
    """Why the lean path does not run a model or a call (torch's path runs it instead)."""


class LeanModel:
    """One converted model's weights (``read_weights``) as the compiled kernels take them, and its search for a
    batch of left-padded sources (``search``)."""

    def __init__(self, arch: Arch, tensors: dict[str, np.ndarray]):
        self.arch = arch
        self.keep: list = []                                             # the structs hold addresses only
        d = arch.embed_dim
        self.scale = np.float32(1.0 if arch.no_scale_embedding else math.sqrt(d))
        self.enc_embed = tensors["encoder.embed_tokens.weight"]
        self.enc_positions = tensors["encoder.embed_positions.weight"]
        self.enc_embed_norm = self._norm(tensors, "encoder.layernorm_embedding")
        self.enc_norm = self._norm(tensors, "encoder.layer_norm")
        self.dec_heads = arch.decoder_attention_heads
        self.enc_layers = self._array([self._layer(tensors, f"encoder.layers.{i}", arch.encoder_attention_heads,
                                                     arch.encoder_normalize_before, decoder=False)
                                         for i in range(arch.encoder_layers)])
        dec_layers = [self._layer(tensors, f"decoder.layers.{i}", self.dec_heads, arch.decoder_normalize_before,
                                  decoder=True) for i in range(arch.decoder_layers)]
        self.dec_layers = self._array(dec_layers)
        self.enc_keys = [(Panels(tensors[f"decoder.layers.{i}.encoder_attn.k_proj.weight"],
                                 tensors[f"decoder.layers.{i}.encoder_attn.k_proj.bias"]),
                          Panels(tensors[f"decoder.layers.{i}.encoder_attn.v_proj.weight"],
                                 tensors[f"decoder.layers.{i}.encoder_attn.v_proj.bias"])) for i in range(arch.decoder_layers)]
        embed, positions = tensors["decoder.embed_tokens.weight"], tensors["decoder.embed_positions.weight"]
        output = Panels(tensors["decoder.output_projection.weight"], None)
        norm, embed_norm = self._norm(tensors, "decoder.layer_norm"), self._norm(tensors, "decoder.layernorm_embedding")
        self.keep += [embed, positions, output, norm, embed_norm]
        self.position_rows = positions.shape[0]
        self.decoder = _Decoder(
            layers=ctypes.cast(self.dec_layers, ctypes.c_void_p), embed=embed.ctypes.data, positions=positions.ctypes.data,
            out_w=output.panels.ctypes.data, out_b=None,
            norm_w=None if norm is None else norm.weight.ctypes.data, norm_b=None if norm is None else norm.bias.ctypes.data,
            embed_norm_w=None if embed_norm is None else embed_norm.weight.ctypes.data,
            embed_norm_b=None if embed_norm is None else embed_norm.bias.ctypes.data,
            count=arch.decoder_layers, vocab=embed.shape[0], c=d, heads=self.dec_heads, position_rows=self.position_rows,
            pad=PAD, unk=UNK, scale=self.scale, norm_eps=LAYER_NORM_EPS if norm else 0.0,
            embed_norm_eps=LAYER_NORM_EPS if embed_norm else 0.0)

    @staticmethod
    def _norm(tensors: dict[str, np.ndarray], name: str) -> Norm | None:
        return Norm(tensors[f"{name}.weight"], tensors[f"{name}.bias"]) if f"{name}.weight" in tensors else None

    def _layer(self, tensors: dict[str, np.ndarray], prefix: str, heads: int, pre_norm: bool, decoder: bool) -> _Layer:
        """One layer's struct, as ``native.Layer`` fills it from the modules (q, k and v fused in that order)."""
        t = {name.removeprefix(prefix + "."): a for name, a in tensors.items() if name.startswith(prefix + ".")}
        attn = "self_attn"
        linears = {"qkv": Panels(np.concatenate([t[f"{attn}.{p}_proj.weight"] for p in "qkv"]),
                                 np.concatenate([t[f"{attn}.{p}_proj.bias"] for p in "qkv"])),
                   "self_out": Panels(t[f"{attn}.out_proj.weight"], t[f"{attn}.out_proj.bias"]),
                   "fc1": Panels(t["fc1.weight"], t["fc1.bias"]), "fc2": Panels(t["fc2.weight"], t["fc2.bias"])}
        norms = {"self_ln": "self_attn_layer_norm", "final_ln": "final_layer_norm"}
        if decoder:
            linears["q"] = Panels(t["encoder_attn.q_proj.weight"], t["encoder_attn.q_proj.bias"])
            linears["cross_out"] = Panels(t["encoder_attn.out_proj.weight"], t["encoder_attn.out_proj.bias"])
            norms["cross_ln"] = "encoder_attn_layer_norm"
        fields = {}
        for name, p in linears.items():
            fields[f"{name}_w"], fields[f"{name}_b"] = p.panels.ctypes.data, p.bias.ctypes.data
        for name, key in norms.items():
            norm = Norm(t[f"{key}.weight"], t[f"{key}.bias"])
            fields[f"{name}_w"], fields[f"{name}_b"] = norm.weight.ctypes.data, norm.bias.ctypes.data
            self.keep.append(norm)
        self.keep += linears.values()
        c = self.arch.embed_dim
        return _Layer(**fields, c=c, ffn=linears["fc1"].out_features, heads=heads, pre_norm=int(pre_norm),
                      activation=Activation.named(self.arch.activation_fn).code, scaling=(c // heads) ** -0.5,
                      eps=LAYER_NORM_EPS)

    @staticmethod
    def _array(layers: list[_Layer]) -> ctypes.Array:
        return (_Layer * len(layers))(*layers)

    def encode(self, src: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """src [B, S] int64, left-padded -> (the real tokens' states [T, C] after the encoder, their positions in
        the batch-major [B * S] order (None: no padding), the additive mask [B, 1, 1, S] (None))."""
        b, s = src.shape
        pad = src == PAD                                                                 # [B, S]
        real = ~pad
        positions = np.cumsum(real, axis=1) * real + PAD                                 # fairseq's numbering
        if int(positions.max()) >= self.enc_positions.shape[0]:
            raise Unsupported("a source longer than the position table")
        # torch's float32 arithmetic: the product rounded, then the sum (no fused multiply-add)
        x = self.enc_embed[src] * self.scale + self.enc_positions[positions]            # [B, S, C]
        x = x.reshape(b * s, -1)                                                         # [B*S, C]
        if self.enc_embed_norm is not None:
            x = self.enc_embed_norm(x)
        keep = None if not pad.any() else np.flatnonzero(real.reshape(-1)).astype(np.int64)   # [T]
        rows = np.ascontiguousarray(x if keep is None else x[keep], np.float32)          # [T, C]
        mask = None
        if keep is not None:
            mask = np.where(pad, np.float32(-np.inf), np.float32(0))[:, None, None, :].astype(np.float32)  # [B, 1, 1, S]
        status = library.load()[0].skinny_encoder_layers(
            self.enc_layers, len(self.enc_layers), rows.ctypes.data, rows.shape[0], _address(keep), b, s, _address(mask),
            *Threads.arguments())
        if status:
            raise RuntimeError(f"skinny_encoder_layers returned {status}")
        if self.enc_norm is not None:
            rows = self.enc_norm(rows)
        return rows, keep, mask

    def search(self, src: np.ndarray, beam: int, limits: list[int], min_len: int, unkpen: float, bos: int, end: int,
               prefix: tuple[int, ...]) -> list[list[tuple[list[int], float, list[float]]]]:
        """``native.Search``'s result for left-padded sources src [B, S]: each sentence's hypotheses in the order
        they ended (tokens, cumulative score, per-position scores). Unsupported where torch's path must run."""
        if PAD + max(limits) + 1 >= self.position_rows:
            raise Unsupported("an output longer than the position table")
        b, s = src.shape
        rows, keep, mask = self.encode(src)
        c, heads = self.arch.embed_dim, self.dec_heads
        keys = []
        for k_proj, v_proj in self.enc_keys:
            for proj in (k_proj, v_proj):
                full = proj(rows)                                                        # [T, C]
                if keep is not None:
                    padded = np.zeros((b * s, c), np.float32)
                    padded[keep] = full
                    full = padded                                                        # [B*S, C], zeros at padding
                # [B*S, C] -> [B, S, H, D] -> [B, H, S, D]
                keys.append(np.ascontiguousarray(full.reshape(b, s, heads, c // heads).transpose(0, 2, 1, 3)))
        pointers = ctypes.c_void_p * len(self.enc_keys)
        k_pointers, v_pointers = pointers(*(k.ctypes.data for k in keys[0::2])), pointers(*(v.ctypes.data for v in keys[1::2]))
        width = max(limits) + 1
        tokens = np.empty((b, beam, width), np.int64)
        positional, scores = np.empty((b, beam, width), np.float32), np.empty((b, beam), np.float32)
        lengths, counts = np.empty((b, beam), np.int32), np.empty(b, np.int32)
        status = library.load()[0].skinny_search(
            ctypes.byref(self.decoder), k_pointers, v_pointers, _address(mask), b, s, beam, (ctypes.c_int * b)(*limits),
            min_len, unkpen, bos, end, (ctypes.c_int64 * max(1, len(prefix)))(*prefix), len(prefix), tokens.ctypes.data,
            positional.ctypes.data, scores.ctypes.data, lengths.ctypes.data, counts.ctypes.data, *Threads.arguments())
        if status == 1:
            raise Unsupported("a step the kernels hand back (a NaN or infinite logit)")
        if status:
            raise RuntimeError(f"skinny_search returned {status}")
        return library.search_results(tokens, positional, scores, lengths, counts)


def normalised_hypotheses(found: list[tuple[list[int], float, list[float]]], lenpen: float) -> list[Hypothesis]:
    """A sentence's hypotheses from the search, best first: cumulative scores divided by length ** lenpen in
    float32 (a float32 tensor divided by a Python float, as porting/generation/beam.py's ``normalised``)."""
    scores = [np.float32(cumulative) / np.float32(len(tokens) ** lenpen) for tokens, cumulative, _ in found]
    scores = [float(s) for s in scores]
    return [Hypothesis(found[i][0], scores[i], found[i][2]) for i in best_first(scores)]


def why_not(model_dir: str | Path, config: dict, *, kernels: str = "fast", dtype: str = "float32",
            quantize: str | None = None) -> str | None:
    """Why the lean path cannot run this model as asked (None: it can, as far as the config tells)."""
    if kernels != "fast" or dtype != "float32" or quantize not in (None, "none"):
        return f"kernels {kernels}, dtype {dtype}, quantize {quantize}: only the fast kernels on float32"
    if not library.available():
        return f"the compiled kernels: {library.unavailable_reason()}"
    p = config["porting"]
    if len(p["ensemble"]) != 1:
        return "an ensemble"
    arch = Arch.from_config(p["architecture"])
    if arch.activation_fn not in [a.fairseq_name for a in Activation] or \
            not library.activation_supported(Activation.named(arch.activation_fn)):
        return f"activation {arch.activation_fn}"
    d = arch.embed_dim
    encoder_side = arch.encoder_layers * (4 * d * d + 2 * d * arch.encoder_ffn_embed_dim) + arch.decoder_layers * 2 * d * d
    if encoder_side > MAX_PANEL_WEIGHTS:
        return "an encoder side too large for panels (torch's layers run it)"
    return None


def read_weights(model_dir: Path, config: dict) -> dict[str, np.ndarray]:
    """The model's tensors by fairseq's names (ties resolved), as ``porting.model.load`` checks them, or
    Unsupported (torch's loader then says what is wrong)."""
    p = config["porting"]
    arch = Arch.from_config(p["architecture"])
    try:
        stored = load_file(str(model_dir / p["ensemble"][0]))
    except (SafetensorError, OSError) as e:
        raise Unsupported(f"not readable here ({e})") from None
    expected = expected_shapes(arch, *vocab_sizes(config))
    tensors = {}
    for name, shape in expected.items():
        a = stored.get(p["ties"].get(PREFIX + name, PREFIX + name))
        if a is None or a.shape != shape or a.dtype != np.float32:
            raise Unsupported(f"{name}: missing, of another shape or not float32")
        tensors[name] = a
    used = {p["ties"].get(PREFIX + n, PREFIX + n) for n in expected}
    for side in ("encoder", "decoder"):
        key = f"{PREFIX}{side}.embed_positions.weight"
        if f"{side}.embed_positions.weight" not in tensors:                    # sinusoidal: the stored table
            table = stored.get(key)
            max_positions = getattr(arch, f"max_{'source' if side == 'encoder' else 'target'}_positions")
            if key not in p.get("derived", {}) or table is None or table.dtype != np.float32 or \
                    table.shape != (max_positions + PAD + 1, arch.embed_dim) or not _is_sinusoidal(table):
                raise Unsupported(f"{key}: no stored sinusoidal table to use")
            tensors[f"{side}.embed_positions.weight"] = table
            used.add(key)
    if set(stored) - used:
        raise Unsupported(f"unexpected tensors {sorted(set(stored) - used)[:3]}")
    return tensors


def _is_sinusoidal(table: np.ndarray) -> bool:
    """Whether a stored table is fairseq's sinusoidal one (porting.model.positions) within
    ``porting.model.load.table_tolerance``'s bound (two correct computations of it part by that much)."""
    rows, dim = table.shape
    half = dim // 2
    freqs = np.exp(np.arange(half, dtype=np.float64) * -(math.log(10000) / (half - 1)))
    angles = np.arange(rows, dtype=np.float64)[:, None] * freqs[None, :]                  # [P, half]
    expected = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    if dim % 2:
        expected = np.concatenate([expected, np.zeros((rows, 1))], axis=1)
    expected[PAD] = 0
    return bool(np.abs(table - expected).max() <= 8 * np.finfo(np.float32).eps * max(rows, 1))


class LeanTranslator(LineTranslator):
    """``porting.translator.Translator``'s interface for one model on the lean path (``open``). A batch the lean
    path cannot run (an output beyond the position table, a step the kernels hand back, an option it lacks)
    goes to the Translator that ``fallback`` makes, made once, on first need: the same hypotheses and scores.
    Every other batch stays here: it runs the same C calls as torch's fast path with less Python around them
    (shipped model, best of 3 in one process: 3,808 against 2,855 tok/s at batch 1, 4,602 against 4,625 at
    batch 32)."""

    def __init__(self, model: LeanModel, fallback, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.model, self.fallback = model, fallback
        self.torch_translator = None                  # made on the first batch that goes to torch
        self.translated = 0                           # lines the lean path translated

    @classmethod
    def open(cls, model_dir: str | Path, fallback, *, normalize_punctuation: bool = False,
             source_lang: str | None = None, target_lang: str | None = None, kernels: str = "fast",
             dtype: str = "float32", quantize: str | None = None, threads: int | None = None) -> "LeanTranslator":
        """The lean path for this model and runtime (``Translator.from_pretrained``'s keywords), or Unsupported
        saying why not; a bad config or tokenizer raises as ``from_pretrained`` does. fallback: () -> a
        Translator for the same model and keywords."""
        started = time.perf_counter()
        model_dir = Path(model_dir)
        config = read_config(model_dir)
        tokenizer = open_tokenizer(model_dir, normalize_punctuation, source_lang, target_lang)  # its errors first
        if reason := why_not(model_dir, config, kernels=kernels, dtype=dtype, quantize=quantize):
            raise Unsupported(reason)
        Threads.use(threads)
        model = LeanModel(Arch.from_config(config["porting"]["architecture"]), read_weights(model_dir, config))
        log.debug("loaded %s on the lean path, without torch (1 model, float32, kernels fast, %d threads) in %.2f s",
                  model_dir, Threads.count, time.perf_counter() - started)
        return cls(model, fallback, tokenizer, config, default_options(model_dir), model_dir, normalize_punctuation)

    def _search_batch(self, ids: list[list[int]], opts: GenerationOptions, start, encoder_cache: dict | None,
                      cache_key: tuple) -> list[list[Hypothesis]]:
        try:
            found = self._search_lean(ids, opts, start)
            self.translated += len(ids)
            return found
        except Unsupported as e:
            log.debug("a batch of %d lines on torch's path: %s", len(ids), e)
        if self.torch_translator is None:
            self.torch_translator = self.fallback()
        return self.torch_translator._search_batch(ids, opts, start, encoder_cache, cache_key)

    def _search_lean(self, ids: list[list[int]], opts: GenerationOptions, start) -> list[list[Hypothesis]]:
        if opts.early_stopping != "fairseq" or opts.no_repeat_ngram_size:
            raise Unsupported("transformers' stopping rule or n-gram blocking")
        width = max(map(len, ids))
        src = np.full((len(ids), width), PAD, np.int64)
        for r, row in enumerate(ids):
            src[r, width - len(row):] = row                                               # left-padded, as fairseq
        limits = length_limits([len(row) for row in ids], width, opts, self.model.arch.max_target_positions)
        found = self.model.search(src, opts.beam, limits, opts.min_len, opts.unkpen, start.bos, start.end, start.prefix)
        return [normalised_hypotheses(sentence, opts.lenpen) for sentence in found]
