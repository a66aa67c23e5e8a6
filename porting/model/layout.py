"""The converted model's tensor layout, declared once and derived from the architecture.

Names are fairseq's module paths under a ``model.`` prefix, which is also transformers' FSMT
naming: a fairseq key maps to ours by prefixing, with no per-key table to drift. The converter
checks a checkpoint against ``expected_shapes``; the loader checks a converted file against the
same table, and the native module tree (porting.model.transformer) must name its parameters
exactly so (porting.model.load refuses to run a tree that disagrees).
"""
from __future__ import annotations

from porting.format import PAD, Arch

PREFIX = "model."
# The name a group of tied embeddings is stored under (the others are aliases of it): every tie
# fairseq makes touches the target embedding (decoder output projection, shared source embedding).
TIE_CANONICAL = "decoder.embed_tokens.weight"
_ATTN = ("q_proj", "k_proj", "v_proj", "out_proj")


def _linear(name: str, out_dim: int, in_dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (out_dim, in_dim), f"{name}.bias": (out_dim,)}


def _norm(name: str, dim: int) -> dict[str, tuple[int, ...]]:
    return {f"{name}.weight": (dim,), f"{name}.bias": (dim,)}


def _attention(name: str, dim: int) -> dict[str, tuple[int, ...]]:
    """An attention block's projections and the layer norm that goes with it."""
    shapes = {}
    for proj in _ATTN:
        shapes.update(_linear(f"{name}.{proj}", dim, dim))
    shapes.update(_norm(f"{name}_layer_norm", dim))
    return shapes


def expected_shapes(arch: Arch, src_vocab: int, tgt_vocab: int, padding_idx: int = PAD) -> dict[str, tuple[int, ...]]:
    """Every tensor the model needs, in fairseq's names (no prefix), with its shape.

    Tied tensors appear under every name that uses them; the converter's ties (``ties`` in the
    config) say which are aliases.
    """
    d = arch.embed_dim
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.embed_tokens.weight": (src_vocab, d),
        "decoder.embed_tokens.weight": (tgt_vocab, d),
        "decoder.output_projection.weight": (tgt_vocab, d),
    }
    for side, max_pos in (("encoder", arch.max_source_positions), ("decoder", arch.max_target_positions)):
        if getattr(arch, f"{side}_learned_pos"):
            # fairseq's LearnedPositionalEmbedding reserves padding_idx + 1 rows before position 1
            shapes[f"{side}.embed_positions.weight"] = (max_pos + padding_idx + 1, d)
        if arch.layernorm_embedding:
            shapes.update(_norm(f"{side}.layernorm_embedding", d))
    for i in range(arch.encoder_layers):
        p = f"encoder.layers.{i}"
        shapes.update(_attention(f"{p}.self_attn", d))
        shapes.update(_linear(f"{p}.fc1", arch.encoder_ffn_embed_dim, d))
        shapes.update(_linear(f"{p}.fc2", d, arch.encoder_ffn_embed_dim))
        shapes.update(_norm(f"{p}.final_layer_norm", d))
    for i in range(arch.decoder_layers):
        p = f"decoder.layers.{i}"
        shapes.update(_attention(f"{p}.self_attn", d))
        shapes.update(_attention(f"{p}.encoder_attn", d))
        shapes.update(_linear(f"{p}.fc1", arch.decoder_ffn_embed_dim, d))
        shapes.update(_linear(f"{p}.fc2", d, arch.decoder_ffn_embed_dim))
        shapes.update(_norm(f"{p}.final_layer_norm", d))
    if arch.encoder_normalize_before:
        shapes.update(_norm("encoder.layer_norm", d))
    if arch.decoder_final_norm:
        shapes.update(_norm("decoder.layer_norm", d))
    return shapes



def derived_tensors(arch: Arch, padding_idx: int = PAD) -> dict:
    """Tensors that are not in the checkpoint but transformers' FSMT loads: the sinusoidal position
    tables (fairseq keeps them out of its state dict and regenerates them), in our names (torch tensors)."""
    # imported here: the table is torch's computation, and porting/lean.py reads expected_shapes without torch
    from porting.model.positions import sinusoidal_table

    out = {}
    for side, max_pos in (("encoder", arch.max_source_positions), ("decoder", arch.max_target_positions)):
        if not getattr(arch, f"{side}_learned_pos"):
            rows = max_pos + padding_idx + 1
            out[f"{PREFIX}{side}.embed_positions.weight"] = sinusoidal_table(rows, arch.embed_dim, padding_idx)
    return out
