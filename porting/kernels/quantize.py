"""Dynamic int8 quantization of the linear layers that decoding runs per step.

Two modes (``QUANTIZE_MODES``, declared in porting/kernels/__init__.py; the commands' ``--quantize`` takes them):
  * ``int8``: only the products that int8 makes faster (``gains``): on the shipped small models none
    is, and they run float32, as fast as ever, and say so; the decoder's layers are quantized as a
    whole or not at all, since in float32 they run as one C call a step and a single int8 product
    among them drops them back to torch's modules, which costs more than it saves;
  * ``int8-all``: every product of the decoder (its layers' and the output projection) and the encoder's
    feed-forward layers, whatever it costs (an all-int8 model's accuracy, as CTranslate2's int8
    quantizes every product: the budgets' evidence, parity/approximation.py).
The encoder's self-attention projections are quantized in both modes where they gain (it runs once per
sentence, not per step: int8 there pays on a wide model at batch 32, where a batch decodes few steps;
int8-all's budgets were measured on the small models, whose stay float32).

torch's dynamic quantization (porting/kernels/int8.py: weights int8 with one scale per output channel, as
CTranslate2's int8; activations quantized per call, one scale per tensor; fbgemm's kernels for few rows,
oneDNN's for many where it has VNNI). The model's own modules are replaced (``quantize_model``), before
the fast decoder and encoder are made from it: those fuse the int8 q, k and v projections into one with
their rows and scales (fast_decoder.fused_qkv), so the fast path and the model's own forward (the
teacher-forced one the parity harness measures) compute the same products, and no float copy of a
replaced product is ever made.

This is an approximation of the model, not a port of it: its BLEU and agreement with fairseq are
measured (benchmarks/speed.py, README), never assumed.
"""
from __future__ import annotations

import torch
from torch import nn

from porting.kernels import QUANTIZE_MODES, int8
from porting.model.transformer import Transformer

# Where an int8 product beats the float32 one (torch's fbgemm dynamic int8 against the C kernels'
# float32, 2 threads; Intel Xeon with AVX-512 and VNNI, 2026-12-06; benchmarks/int8_products.py
# prints it): at 5 rows (beam 5, batch 1) and 160 rows (batch 32), int8 / float32 time
#   128 -> 384: 5.8x / 1.18x slower;   512 -> 128: 3.7x / 1.24x slower;   128 -> 7000: 1.0x / 2.8x slower;
#   512 -> 2048: 1.6x / 2.3x faster;   1024 -> 1024: 1.45x / 2.4x faster;  1024 -> 4096: 1.5x / 3.3x faster;
#   1024 -> 32000: 3.9x / 2.7x faster.
# Quantizing activations costs per row and input, so narrow inputs lose whatever the width.
MIN_INPUTS = 512
MIN_WEIGHTS = 1 << 20


def gains(layer: nn.Linear, fused: int = 1) -> bool:
    """Whether int8 makes this product faster (the measurements above); ``fused``: run as one product with
    as many others of its shape (q, k and v: porting.kernels.fast_decoder.fused_qkv)."""
    return layer.in_features >= MIN_INPUTS and layer.in_features * layer.out_features * fused >= MIN_WEIGHTS


def _self_attention_gains(layers: nn.ModuleList) -> bool:
    return all(gains(layer.self_attn.q_proj, fused=3) and gains(layer.self_attn.out_proj) for layer in layers)


def _decoder_gains(model: Transformer) -> bool:
    """Whether every product of the decoder's layers at each step gains."""
    return _self_attention_gains(model.decoder.layers) and all(
        gains(lin) for layer in model.decoder.layers
        for lin in (layer.encoder_attn.q_proj, layer.encoder_attn.out_proj, layer.fc1, layer.fc2))


def _replace(modules: list[nn.Module], names: tuple[str, ...]) -> None:
    """Each named linear of each module by its int8 one, one at a time: the float weight is dropped as its
    int8 one is made (unless another name holds it: a tied output projection)."""
    for module in modules:
        for name in names:
            setattr(module, name, int8.linear(getattr(module, name)))


def quantize_model(model: Transformer, mode: str = "int8") -> list[str]:
    """In place, before the fast decoder and encoder are made from the model: they then pack only the
    float32 products left, and fuse the int8 q/k/v projections as they are (fast_decoder.fused_qkv), so
    the float copies and the int8 ones are never held together. ``mode`` one of ``QUANTIZE_MODES``.
    Returns what was quantized and what stayed float32, and why, one line per part."""
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize mode must be one of {', '.join(QUANTIZE_MODES)}, got {mode!r}")
    if not int8.available():
        raise RuntimeError(f"no int8 engine on this machine (torch reports {torch.backends.quantized.engine!r})")
    every = mode == "int8-all"
    attention = ("q_proj", "k_proj", "v_proj", "out_proj")
    enc, dec = model.encoder.layers, model.decoder.layers
    parts = {"decoder layers": every or _decoder_gains(model),
             "output projection": every or gains(model.decoder.output_projection),
             "encoder feed-forward": every or all(gains(layer.fc1) and gains(layer.fc2) for layer in enc),
             # once per sentence, not per step: int8 there pays where a batch decodes few steps (a wide
             # model at batch 32). int8-all's budgets were measured with the small models', which stay float32
             "encoder self-attention": _self_attention_gains(enc)}
    if parts["decoder layers"]:
        _replace([layer.self_attn for layer in dec] + [layer.encoder_attn for layer in dec], attention)
        _replace(list(dec), ("fc1", "fc2"))
    if parts["output projection"]:
        _replace([model.decoder], ("output_projection",))
    if parts["encoder feed-forward"]:
        _replace(list(enc), ("fc1", "fc2"))
    if parts["encoder self-attention"]:
        _replace([layer.self_attn for layer in enc], attention)
    why = (f" (too small to gain: int8 pays from {MIN_INPUTS} inputs and {MIN_WEIGHTS:,} weights per product on; "
           "porting/kernels/quantize.py)")
    return [f"{part}: {'int8' if done else 'float32' + why}" for part, done in parts.items()]
