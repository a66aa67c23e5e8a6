"""Legacy fairseq checkpoints brought to the current key layout, as pure functions.

fairseq does these upgrades inside its modules' ``upgrade_state_dict_named`` while loading; we do
them on plain dicts of tensors, without importing fairseq. Each function returns a new dict and a
list of (old key, what happened) notes for the provenance manifest.
"""
from __future__ import annotations

import re

import torch

Notes = list[tuple[str, str]]

_IN_PROJ = re.compile(r"^(?P<prefix>.*\.(?:self_attn|encoder_attn))\.in_proj_(?P<kind>weight|bias)$")
# Old layer-norm names: encoder layer_norms.0/1, decoder layer_norms.0/1/2 (fairseq < 0.6.2)
_ENC_LN = {"0": "self_attn_layer_norm", "1": "final_layer_norm"}
_DEC_LN = {"0": "self_attn_layer_norm", "1": "encoder_attn_layer_norm", "2": "final_layer_norm"}
_LAYER_NORMS = re.compile(r"^(?P<side>encoder|decoder)\.layers\.(?P<i>\d+)\.layer_norms\.(?P<n>\d)\.(?P<p>weight|bias)$")


def split_fused_in_proj(state: dict[str, torch.Tensor]) -> tuple[dict, Notes]:
    """``in_proj_weight`` [3E, E] (q, k, v stacked along dim 0) -> ``q_proj/k_proj/v_proj.weight`` [E, E]."""
    out, notes = {}, []
    for key, value in state.items():
        m = _IN_PROJ.match(key)
        if not m:
            out[key] = value
            continue
        if value.shape[0] % 3:
            raise ValueError(f"{key}: first dimension {value.shape[0]} is not divisible by 3")
        for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
            out[f"{m['prefix']}.{name}.{m['kind']}"] = part
        notes.append((key, "split into q_proj/k_proj/v_proj (fused legacy attention projection)"))
    return out, notes


def rename_layer_norms(state: dict[str, torch.Tensor]) -> tuple[dict, Notes]:
    out, notes = {}, []
    for key, value in state.items():
        m = _LAYER_NORMS.match(key)
        if not m:
            out[key] = value
            continue
        names = _ENC_LN if m["side"] == "encoder" else _DEC_LN
        if m["n"] not in names:
            raise ValueError(f"{key}: unexpected legacy layer norm index")
        new = f"{m['side']}.layers.{m['i']}.{names[m['n']]}.{m['p']}"
        out[new] = value
        notes.append((key, f"renamed to {new} (legacy layer_norms.N)"))
    return out, notes


def rename_embed_out(state: dict[str, torch.Tensor]) -> tuple[dict, Notes]:
    """Old decoders kept an untied output matrix as ``decoder.embed_out`` (a Parameter, not a Linear)."""
    if "decoder.embed_out" not in state:
        return dict(state), []
    out = {k: v for k, v in state.items() if k != "decoder.embed_out"}
    out["decoder.output_projection.weight"] = state["decoder.embed_out"]
    return out, [("decoder.embed_out", "renamed to decoder.output_projection.weight (legacy name)")]


def upgrade(state: dict[str, torch.Tensor]) -> tuple[dict, Notes]:
    """All legacy upgrades, in the order fairseq applies them."""
    notes: Notes = []
    for step in (split_fused_in_proj, rename_layer_norms, rename_embed_out):
        state, n = step(state)
        notes += n
    return state, notes
