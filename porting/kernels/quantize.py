"""Dynamic int8 quantization of the linear layers that decoding runs per step.

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

from porting.kernels.fast_decoder import FastDecoder
from porting.model.transformer import Transformer


def _int8(layer: nn.Linear) -> nn.Module:
    with warnings.catch_warnings():
        # torch.ao.quantization's migration notice and its quantized tensors' deprecation notice
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", "torch.quantize_per_tensor", UserWarning)
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return torch.ao.quantization.quantize_dynamic(nn.Sequential(layer), {nn.Linear: qconfig}, dtype=torch.qint8)[0]


def quantize_int8(models: list[Transformer], decoders: list[FastDecoder]) -> None:
    """In place: each model and its fast decoder (the exact path reads float weights directly)."""
    if not all(isinstance(d, FastDecoder) for d in decoders):
        raise ValueError("int8 quantization needs the fast kernels")
    if torch.backends.quantized.engine not in ("fbgemm", "x86", "qnnpack"):
        raise RuntimeError(f"no int8 engine on this machine (torch reports {torch.backends.quantized.engine!r})")
    for model, fast in zip(models, decoders):
        fast.qkv = [_int8(q) for q in fast.qkv]
        for layer in model.decoder.layers:
            for attention in (layer.self_attn, layer.encoder_attn):
                for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    setattr(attention, name, _int8(getattr(attention, name)))
            layer.fc1, layer.fc2 = _int8(layer.fc1), _int8(layer.fc2)
        model.decoder.output_projection = _int8(model.decoder.output_projection)
        fast.repack()                             # drops the float copies of replaced layers
        for layer in model.encoder.layers:
            layer.fc1, layer.fc2 = _int8(layer.fc1), _int8(layer.fc2)
