"""Dynamic int8 linear modules, as porting/kernels/quantize.py makes them and the fast path fuses them: torch's
(weights int8 with one scale per output channel, activations quantized per call with one scale per tensor),
packed for two engines.

The engines: torch offers fbgemm ("x86", "fbgemm") and oneDNN ("onednn") for these products, and
neither is faster everywhere. Measured on the AMD EPYC of this project (AVX-512 with VNNI, 2 threads),
fbgemm's time over oneDNN's for 5 / 20 / 80 / 160 / 320 / 800 rows:
    1024 -> 1024   0.73 0.64 0.86 0.96 0.96 1.03      1024 -> 4096   0.79 0.82 0.97 1.00 1.06 1.30
    4096 -> 1024   0.73 0.70 0.78 0.82 1.17 1.02      1024 -> 32000  0.59 0.78 1.16 1.19 1.80 1.37
(the two results within ~1e-7 of each other: the same quantization of weights and activations). So each
module is packed for both where this torch has oneDNN, and runs fbgemm's under ``MANY_ROWS`` rows (a
decoder step at batch 1: 5 rows), oneDNN's from there on (a step at batch 32: 160 rows; an encoder's
tokens; a teacher-forced batch). Where to cut, measured whole: a wmt19-size model at batch 32, in one
process taking turns (6 rounds, the same hypotheses), 248 tok/s on fbgemm alone, 248 with oneDNN from
256 rows, 262-267 from 100 or 128 rows (the output projection, 1024 -> 32000, gains most), 262 on
oneDNN alone (which loses at batch 1, above).
oneDNN's int8 wins through VNNI: held to AVX2 (`ATEN_CPU_CAPABILITY=avx2`, `ONEDNN_MAX_CPU_ISA=AVX2`: the
suite's and the AVX2 table's setting) it ran a wmt19-size model at batch 32 at 148 tok/s against fbgemm's
209, so there, and on CPUs without AVX-512 VNNI, fbgemm runs every product. A packing runs on the engine it
was packed for, whatever the process's engine is later.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import Linear as QuantizedLinear

from porting.kernels import build

MANY_ROWS = 128
# None: the process's engine (this torch without the named one)
FEW_ROWS_ENGINE = "fbgemm" if "fbgemm" in torch.backends.quantized.supported_engines else None
# oneDNN's ISA limits that leave it no AVX-512 VNNI
_ONEDNN_WITHOUT_VNNI = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE"}


def _many_rows_engine() -> str | None:
    """oneDNN where this torch has it and it runs AVX-512 VNNI here (the measurements above), else None."""
    if "onednn" not in torch.backends.quantized.supported_engines or "avx512_vnni" not in build.cpu_flags():
        return None
    if torch.backends.cpu.get_cpu_capability() != "AVX512":        # held to AVX2 (ATEN_CPU_CAPABILITY)
        return None
    if os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper() in _ONEDNN_WITHOUT_VNNI:
        return None
    return "onednn"


MANY_ROWS_ENGINE = _many_rows_engine()


@contextlib.contextmanager
def _engine(name: str | None):
    """torch's quantized engine set to ``name`` (None: as it is) while modules are packed."""
    before = torch.backends.quantized.engine
    if name is not None:
        torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


def available() -> bool:
    """Whether this torch has an int8 engine for these modules."""
    return torch.backends.quantized.engine in ("fbgemm", "x86", "onednn", "qnnpack")


def _packed(weight: Tensor, bias: Tensor | None, engine: str | None) -> QuantizedLinear:
    with _engine(engine):
        module = QuantizedLinear(weight.size(1), weight.size(0), dtype=torch.qint8)
        module.set_weight_bias(weight, bias)
    return module


class Linear(nn.Module):
    """A dynamic int8 product packed for fbgemm (``few``) and, where this torch has it, oneDNN (``many``), each
    run where it is faster (the table above); ``weight()``, ``bias()`` and ``set_weight_bias`` as torch's
    module has them."""

    def __init__(self, weight: Tensor, bias: Tensor | None):
        """weight: qint8 [out, in], one scale per output channel."""
        super().__init__()
        self.in_features, self.out_features = weight.size(1), weight.size(0)
        self.set_weight_bias(weight, bias)

    def set_weight_bias(self, weight: Tensor, bias: Tensor | None) -> None:
        self.few = _packed(weight, bias, FEW_ROWS_ENGINE)
        self.many = None if MANY_ROWS_ENGINE is None else _packed(weight, bias, MANY_ROWS_ENGINE)

    def weight(self) -> Tensor:
        return self.few.weight()

    def bias(self) -> Tensor | None:
        return self.few.bias()

    def forward(self, x: Tensor) -> Tensor:
        """x [..., in] -> [..., out]"""
        rows = x.numel() // self.in_features
        return (self.many if self.many is not None and rows >= MANY_ROWS else self.few)(x)


def linear(layer: nn.Linear) -> Linear:
    """The int8 module of a float one (a copy: the float module is left as it is)."""
    with warnings.catch_warnings():
        # torch.ao.quantization's migration notice and its quantized tensors' deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        torch_module = torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear: qconfig},
                                                              dtype=torch.qint8)[0]
    return Linear(torch_module.weight(), torch_module.bias())


def fused(parts: tuple[Linear, ...]) -> Linear:
    """Several int8 modules of one input as one (q, k and v: porting.kernels.fast_decoder.fused_qkv): their rows
    and scales stacked, so the fused product computes exactly what the parts compute (and what quantizing the
    float fused projection gives). The integers go back through float and are quantized again with their own
    scales: q * s / s rounds back to q for |q| <= 127 (tests/test_fast_kernels.py checks the integers)."""
    weights = [p.weight() for p in parts]                                   # qint8, per channel, axis 0
    stacked = torch.quantize_per_channel(torch.cat([w.dequantize() for w in weights]),
                                         torch.cat([w.q_per_channel_scales() for w in weights]),
                                         torch.cat([w.q_per_channel_zero_points() for w in weights]), 0, torch.qint8)
    return Linear(stacked, torch.cat([p.bias() for p in parts]))
