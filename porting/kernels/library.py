"""The compiled kernels' library itself, without torch: building and loading it (porting/kernels/build.py),
the ABI checks (``struct layer`` and ``struct decoder`` against their ctypes mirrors, every entry point's
signature from the library's own table, skinny_abi.h) and the OpenMP runtime its threads run on.
porting/kernels/native.py wraps it for torch tensors; porting/lean.py calls it on numpy arrays, in a
process that never imports torch (the start-up path).
"""
from __future__ import annotations

import ctypes
import functools
import os
import warnings

from porting.kernels import build
from porting.model.activation import Activation

PANEL = 16                  # output columns per panel, as in skinny.c


class _Layer(ctypes.Structure):
    """skinny.c's struct layer, field for field (checked against skinny_abi when the library loads)."""
    _fields_ = [(name, ctypes.c_void_p) for name in (
        "qkv_w", "qkv_b", "self_out_w", "self_out_b", "self_ln_w", "self_ln_b", "q_w", "q_b",
        "cross_out_w", "cross_out_b", "cross_ln_w", "cross_ln_b", "fc1_w", "fc1_b", "fc2_w", "fc2_b",
        "final_ln_w", "final_ln_b")] + [(name, ctypes.c_int) for name in ("c", "ffn", "heads", "pre_norm", "activation")] \
        + [("scaling", ctypes.c_float), ("eps", ctypes.c_float)]


class _Decoder(ctypes.Structure):
    """skinny_search.c's struct decoder, field for field (checked against skinny_search_abi when the library loads)."""
    _fields_ = [(name, ctypes.c_void_p) for name in ("layers", "embed", "positions", "out_w", "out_b", "norm_w", "norm_b",
                                                         "embed_norm_w", "embed_norm_b")] \
        + [(name, ctypes.c_int) for name in ("count", "vocab", "c", "heads", "position_rows", "pad", "unk")] \
        + [(name, ctypes.c_float) for name in ("scale", "norm_eps", "embed_norm_eps")]


def abi_mismatch(lib: ctypes.CDLL) -> str | None:
    """How the library's struct layer or struct decoder differs from its mirror, _Layer or _Decoder (size, then
    the first field that moved), or None."""
    for struct, name, entry in ((_Layer, "layer", "skinny_abi"), (_Decoder, "decoder", "skinny_search_abi")):
        out = (ctypes.c_int64 * 256)()            # room for any struct the sources may declare
        function = getattr(lib, entry)
        function.argtypes, function.restype = [ctypes.c_void_p], ctypes.c_int   # before declare(): the structs first
        written = function(out)
        if written != len(struct._fields_) + 1:
            return f"the library's struct {name} has {written - 1} fields, the Python mirror {len(struct._fields_)}"
        if out[0] != ctypes.sizeof(struct):
            return f"the library's struct {name} takes {out[0]} bytes, the Python mirror {ctypes.sizeof(struct)}"
        for (field, _), offset in zip(struct._fields_, out[1:]):
            if getattr(struct, field).offset != offset:
                return (f"struct {name}'s field {field} is at byte {offset} in the library, "
                        f"{getattr(struct, field).offset} in the mirror")
    return None


# skinny_abi.h's type codes -> ctypes (a pointer is passed as an address, a ctypes array or None)
CTYPES = {"p": ctypes.c_void_p, "i": ctypes.c_int, "f": ctypes.c_float, "v": None}
# the entry points this file calls: each must be in the library's table
CALLED = ("skinny_linear_threads", "skinny_attention", "skinny_embed", "skinny_decoder_layers", "skinny_encoder_layers",
          "skinny_candidates", "skinny_activation_supported", "skinny_abi", "skinny_layer_norm", "skinny_search",
          "skinny_search_abi")


def signatures(lib: ctypes.CDLL) -> dict[str, tuple[str, str]]:
    """The library's entry points as skinny_abi.h declares them: name -> (return code, argument codes)."""
    try:
        lib.skinny_signatures.argtypes, lib.skinny_signatures.restype = [], ctypes.c_char_p
    except AttributeError:
        return {}                                   # a library without the table: every entry point missing
    entries = (entry.split(":") for entry in lib.skinny_signatures().decode().split(";") if entry)
    return {name: (ret, args) for name, ret, args in entries}


def declare(lib: ctypes.CDLL) -> str | None:
    """Every entry point's argtypes and restype set from the library's own table (skinny_abi.h); what
    is wrong with the table instead (an entry point this file calls missing, a type it cannot pass)."""
    table = signatures(lib)
    if missing := [name for name in CALLED if name not in table]:
        return f"the library declares no {', '.join(missing)}"
    for name, (ret, args) in table.items():
        if unknown := sorted(set(ret + args) - set(CTYPES)):
            return f"{name} has types of codes {unknown} that native.py cannot pass"
        function = getattr(lib, name)
        function.argtypes, function.restype = [CTYPES[code] for code in args], CTYPES[ret]
    return None


@functools.cache
def load() -> tuple[ctypes.CDLL | None, str | None, str | None]:
    """(the library, None, the instruction set it was built for), or (None, why not, None)."""
    try:
        isa = build.check_machine()
        lib = ctypes.CDLL(str(build.library(isa)))
        mismatch = abi_mismatch(lib)
        if mismatch:
            raise build.Unavailable(f"ABI mismatch between porting/kernels/skinny.c and native.py: {mismatch}")
    except build.Unavailable as e:
        if os.environ.get("PORTING_NATIVE", "1") != "0":    # not asked for: say so once, it costs speed
            warnings.warn(f"porting: few-row kernels unavailable ({e}); torch's kernels stand in (slower)",
                          RuntimeWarning, stacklevel=3)
        return None, str(e), None
    except OSError as e:                                    # a library that does not load
        return None, f"the compiled kernel does not load: {e}", None
    mismatch = declare(lib)
    if mismatch:
        return None, f"the compiled kernels' entry points are not what native.py calls: {mismatch}", None
    return lib, None, isa


@functools.cache
def _openmp() -> tuple[int | None, int | None]:
    """torch's GOMP_parallel and omp_get_thread_num, where torch runs on GNU OpenMP (its libgomp is
    then already loaded: RTLD_NOLOAD finds that copy and never loads a second runtime, whose threads
    would fight torch's for the cores); (None, None) otherwise, and the kernels run on one thread."""
    try:
        gomp = ctypes.CDLL("libgomp.so.1", mode=os.RTLD_NOLOAD)
        return (ctypes.cast(gomp.GOMP_parallel, ctypes.c_void_p).value,
                ctypes.cast(gomp.omp_get_thread_num, ctypes.c_void_p).value)
    except (OSError, AttributeError):
        return None, None


def load_torch_openmp() -> bool:
    """In a process that has not imported torch (porting/lean.py): load torch's own libgomp, from the torch
    package installed beside this one, so that the kernels run on the threads torch would give them. It is
    the copy torch loads when it is imported (by soname, libgomp.so.1): one OpenMP runtime either way.
    Whether the kernels now have GNU OpenMP threads."""
    if _openmp()[0] is not None:
        return True
    import importlib.util

    spec = importlib.util.find_spec("torch")               # finds the package, imports nothing
    if spec is None or not spec.submodule_search_locations:
        return False
    path = os.path.join(spec.submodule_search_locations[0], "lib", "libgomp.so.1")
    try:
        ctypes.CDLL(path)
    except OSError:
        return False
    _openmp.cache_clear()
    return _openmp()[0] is not None


def default_threads() -> int:
    """The threads torch gives its intra-op pool by default, without importing it (ATen's
    intraop_default_num_threads): OMP_NUM_THREADS, else MKL_NUM_THREADS, else one per physical core
    (as cpuinfo counts them: (physical id, core id) pairs; the logical CPUs where those are not listed).
    The kernels' results depend on their thread count (a reduction split between threads sums in
    another order), so porting/lean.py must run on torch's number to give torch's bits."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(variable, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    cores = set()
    try:
        with open("/proc/cpuinfo") as f:
            physical = None
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "physical id":
                    physical = value.strip()
                elif name.strip() == "core id":
                    cores.add((physical, value.strip()))
    except OSError:
        pass
    return len(cores) or os.cpu_count() or 1


def pack_panels(weight, bias):
    """A linear layer's weights [n, k] (and bias [n]) as skinny.c reads them: numpy float32 arrays of panels
    [ceil(n / 16), k, 16] and a bias [ceil(n / 16) * 16] (or None), zero-padded. One packing for
    porting/kernels/native.py's tensors and porting/lean.py's arrays (a copy, so the same bits)."""
    import numpy as np

    n, k = weight.shape
    n16 = -(-n // PANEL) * PANEL
    padded = np.zeros((n16, k), np.float32)
    padded[:n] = weight
    # [n16, k] -> [n16 / 16, 16, k] -> [n16 / 16, k, 16]
    panels = np.ascontiguousarray(padded.reshape(n16 // PANEL, PANEL, k).transpose(0, 2, 1))
    padded_bias = None
    if bias is not None:
        padded_bias = np.zeros(n16, np.float32)
        padded_bias[:n] = bias
    return panels, padded_bias


def search_results(tokens, positional, scores, lengths, counts) -> list[list[tuple[list[int], float, list[float]]]]:
    """``skinny_search``'s outputs (tensors or arrays: tokens and positional [B, beam, W], scores and lengths
    [B, beam], counts [B]) as each sentence's hypotheses in the order they ended: (tokens, cumulative score,
    per-position scores); one conversion per output (not one per hypothesis)."""
    tokens, positional, scores, lengths = tokens.tolist(), positional.tolist(), scores.tolist(), lengths.tolist()
    return [[(tokens[s][h][:length], scores[s][h], positional[s][h][:length])
             for h, length in enumerate(lengths[s][:count])] for s, count in enumerate(counts.tolist())]


def available() -> bool:
    return load()[0] is not None


def threaded() -> bool:
    """Whether large products and attention rows are split between torch's threads (torch on GNU
    OpenMP); elsewhere (Intel's OpenMP, macOS) the kernels run on one thread."""
    return _openmp()[0] is not None


def activation_supported(activation: Activation) -> bool:
    """Whether skinny.c's ``activate`` has a case for it (``available()`` must be True)."""
    return bool(load()[0].skinny_activation_supported(activation.code))


def unavailable_reason() -> str | None:
    return load()[1]


def isa() -> str | None:
    """The instruction set the loaded kernels were built for ("avx2", "avx512"), None where unavailable."""
    return load()[2]


def describe() -> str:
    """What the compiled kernels run as, for a run's signature: "built avx512", "built avx2", or why not."""
    return f"built {isa()}" if available() else f"unavailable: {unavailable_reason()}"


