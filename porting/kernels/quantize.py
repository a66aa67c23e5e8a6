"""Dynamic int8 quantization of the linear layers that decoding runs per step.

Two modes (``QUANTIZE_MODES``, declared in porting/kernels/__init__.py; the commands' ``--quantize`` takes them):
  * ``int8``: only the products that int8 makes faster (``gains``): on the shipped small models none
    is, and they run float32, as fast as ever, and say so; the decoder's layers are quantized as a
    whole or not at all, since in float32 they run as one C call a step and a single int8 product
    among them drops them back to torch's modules, which costs more than it saves;
  * ``int8-all``: every product listed below, whatever it costs (an all-int8 model's accuracy,
    as CTranslate2's int8 quantizes every product: the budgets' evidence, parity/approximation.py).

torch's dynamic quantization (weights int8 with one scale per output channel, as CTranslate2's int8;
activations quantized per call, one scale per tensor; fbgemm kernels) replaces: the fast step's fused
self-attention projection, its output projection, encoder-attention projections, both feed-forward
layers of every decoder layer, the decoder's output projection, and the encoder's feed-forward
layers. Encoder self-attention stays float: it runs once per sentence, not per step, so it gains
little. The model's own decoder self-attention projections (the teacher-forced forward's, which the
parity harness measures) are quantized too: per output channel, q, k and v each get the rows and
scales of the fused projection, so both paths compute the same products.

This is an approximation of the model, not a port of it: its BLEU and agreement with fairseq are
measured (benchmarks/speed.py, README), never assumed.
"""
from __future__ import annotations

import warnings

import torch
from torch import nn

from porting.kernels import QUANTIZE_MODES
from porting.kernels.fast_decoder import FastDecoder
from porting.kernels.fast_encoder import FastEncoder
from porting.model.transformer import Transformer


def _int8(layer: nn.Linear) -> nn.Module:
    with warnings.catch_warnings():
        # torch.ao.quantization's migration notice and its quantized tensors' deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear: qconfig}, dtype=torch.qint8)[0]


# Where an int8 product beats the float32 one (torch's fbgemm dynamic int8 against the C kernels'
# float32, 2 threads; Intel Xeon with AVX-512 and VNNI, 2026-12-06; benchmarks/int8_products.py
# prints it): at 5 rows (beam 5, batch 1) and 160 rows (batch 32), int8 / float32 time
#   128 -> 384: 5.8x / 1.18x slower;   512 -> 128: 3.7x / 1.24x slower;   128 -> 7000: 1.0x / 2.8x slower;
#   512 -> 2048: 1.6x / 2.3x faster;   1024 -> 1024: 1.45x / 2.4x faster;  1024 -> 4096: 1.5x / 3.3x faster;
#   1024 -> 32000: 3.9x / 2.7x faster.
# Quantizing activations costs per row and input, so narrow inputs lose whatever the width.
MIN_INPUTS = 512
MIN_WEIGHTS = 1 << 20


def gains(layer: nn.Linear) -> bool:
    """Whether int8 makes this product faster (the measurements above)."""
    return layer.in_features >= MIN_INPUTS and layer.in_features * layer.out_features >= MIN_WEIGHTS


def _decoder_products(model: Transformer, fast: FastDecoder) -> list[nn.Linear]:
    """The products of the decoder's layers at each step (the fused self-attention projection
    stands for q, k and v)."""
    out = list(fast.qkv)
    for layer in model.decoder.layers:
        out += [layer.self_attn.out_proj, layer.encoder_attn.q_proj, layer.encoder_attn.out_proj, layer.fc1, layer.fc2]
    return out


def quantize_int8(models: list[Transformer], decoders: list[FastDecoder], encoders: list[FastEncoder],
                  mode: str = "int8") -> list[str]:
    """In place: each model and its fast decoder and encoder (the exact path reads float weights directly);
    ``mode`` one of ``QUANTIZE_MODES``. Returns what was quantized and what stayed float32, and why, one
    line per part of the first model (the members of an ensemble share an architecture)."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize mode must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    if not all(isinstance(d, FastDecoder) for d in decoders) or not all(isinstance(e, FastEncoder) for e in encoders):
        raise ValueError("int8 quantization needs the fast kernels")
    if torch.backends.quantized.engine not in ("fbgemm", "x86", "qnnpack"):
        raise RuntimeError(f"no int8 engine on this machine (torch reports {torch.backends.quantized.engine!r})")
    every = mode == "int8-all"
    said = []
    for member, (model, fast, encoder) in enumerate(zip(models, decoders, encoders, strict=True)):
        parts = {"decoder layers": every or all(map(gains, _decoder_products(model, fast))),
                 "output projection": every or gains(model.decoder.output_projection),
                 "encoder feed-forward": every or all(gains(layer.fc1) and gains(layer.fc2)
                                                       for layer in model.encoder.layers)}
        if parts["decoder layers"]:
            fast.qkv = [_int8(q) for q in fast.qkv]
            for layer in model.decoder.layers:
                for attention in (layer.self_attn, layer.encoder_attn):
                    for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                        setattr(attention, name, _int8(getattr(attention, name)))
                layer.fc1, layer.fc2 = _int8(layer.fc1), _int8(layer.fc2)
        if parts["output projection"]:
            model.decoder.output_projection = _int8(model.decoder.output_projection)
        if parts["decoder layers"] or parts["output projection"]:
            fast.repack()                         # drops the float copies of replaced layers
        if parts["encoder feed-forward"]:
            for layer in model.encoder.layers:
                layer.fc1, layer.fc2 = _int8(layer.fc1), _int8(layer.fc2)
            encoder.repack()                      # its layers run as modules again, the int8 ones among them
        if member == 0:
            why = "" if every else (f" (too small to gain: int8 pays from {MIN_INPUTS} inputs and "
                                    f"{MIN_WEIGHTS:,} weights per product on; porting/kernels/quantize.py)")
            said = [f"{part}: {'int8' if done else 'float32' + why}" for part, done in parts.items()]
    return said
