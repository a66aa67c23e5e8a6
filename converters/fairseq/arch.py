"""fairseq transformer options: read from a checkpoint's args/cfg, checked, and described.

Every option that changes the math is either supported (kept in ``Architecture``) or refused;
all refusals are collected and reported together, never one at a time.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

from porting.format import Arch
from porting.model import layout
from porting.model.activation import names as activation_names

# fairseq's `base_architecture` defaults, for keys that older checkpoints predate.
DEFAULTS = {
    "activation_fn": "relu", "encoder_normalize_before": False, "decoder_normalize_before": False,
    "encoder_learned_pos": False, "decoder_learned_pos": False, "layernorm_embedding": False,
    "no_scale_embedding": False, "share_all_embeddings": False, "share_decoder_input_output_embed": False,
    "max_source_positions": 1024, "max_target_positions": 1024, "no_token_positional_embeddings": False,
    "adaptive_softmax_cutoff": None, "adaptive_input": False, "cross_self_attention": False,
    "layer_wise_attention": False, "no_decoder_final_norm": False, "encoder_layers_to_keep": None,
    "decoder_layers_to_keep": None, "tie_adaptive_weights": False, "no_cross_attention": False,
    "encoder_ffn_embed_dim": 2048, "decoder_ffn_embed_dim": 2048, "encoder_layers": 6, "decoder_layers": 6,
    "encoder_attention_heads": 8, "decoder_attention_heads": 8, "encoder_embed_dim": 512,
    "dropout": 0.1, "attention_dropout": 0.0, "activation_dropout": 0.0,
}
SUPPORTED_ACTIVATIONS = activation_names()
# BART's and mBART's models are fairseq's transformer with other defaults (bart_large_architecture,
# mbart_large_architecture): the same math
SUPPORTED_ARCHS = ("transformer", "bart_", "mbart_")


class UnsupportedArchitecture(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("unsupported architecture:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Architecture(Arch):
    """The port's ``Arch`` (every option that changes the math) plus what the converter also keeps;
    names follow fairseq's options."""
    arch: str
    share_all_embeddings: bool
    share_decoder_input_output_embed: bool
    dropout: float
    attention_dropout: float
    activation_dropout: float

    def to_dict(self) -> dict:
        return asdict(self)

    def ties(self) -> dict[str, str]:
        """alias -> the stored tensor it shares (fairseq names)."""
        out = {}
        if self.share_decoder_input_output_embed:
            out["decoder.output_projection.weight"] = layout.TIE_CANONICAL
        if self.share_all_embeddings:
            out["encoder.embed_tokens.weight"] = layout.TIE_CANONICAL
        return out

    def fsmt_incompatibilities(self) -> list[str]:
        """Options transformers' FSMT cannot express (the native port runs them all)."""
        out = []
        if self.encoder_normalize_before or self.decoder_normalize_before:
            out.append("pre-norm layers (encoder/decoder_normalize_before): FSMT is post-norm only")
        if self.layernorm_embedding:
            out.append("layernorm_embedding: FSMT has no embedding layer norm")
        if self.encoder_learned_pos or self.decoder_learned_pos:
            out.append("learned positional embeddings: FSMT regenerates sinusoidal ones")
        if self.max_source_positions != self.max_target_positions:
            out.append("max_source_positions != max_target_positions: FSMT has one max_position_embeddings")
        return out


def model_args(state: dict) -> dict:
    """The model options of a fairseq checkpoint as a plain dict: ``args`` (a Namespace, older
    files) or ``cfg["model"]`` (a Namespace or a dict, fairseq >= 0.10)."""
    args = state.get("args")
    if args is None and isinstance(state.get("cfg"), dict):
        args = state["cfg"].get("model")
    if isinstance(args, argparse.Namespace):
        return dict(vars(args))
    if isinstance(args, dict):
        return dict(args)
    raise ValueError("the checkpoint has neither `args` nor `cfg['model']`: not a fairseq model checkpoint")


def task_config(state: dict) -> dict:
    """The task's options of a fairseq checkpoint as a plain dict (``args``, or ``cfg["task"]``)."""
    args = state.get("args")
    task = vars(args) if isinstance(args, argparse.Namespace) else None
    if task is None and isinstance(state.get("cfg"), dict):
        task = state["cfg"].get("task")
        task = vars(task) if isinstance(task, argparse.Namespace) else task
    return dict(task) if isinstance(task, dict) else {}


def task_languages(state: dict) -> tuple[str | None, str | None]:
    task = task_config(state)
    return task.get("source_lang"), task.get("target_lang")


def read_architecture(args: dict) -> Architecture:
    """Check every option that changes the math; raise once with every problem found."""
    a = {**DEFAULTS, **{k: v for k, v in args.items() if v is not None}}  # unset (None) -> fairseq's default
    problems = []
    arch = str(a.get("arch") or a.get("_name") or "")
    if not arch.startswith(SUPPORTED_ARCHS):
        problems.append(f"arch {arch!r}: supported are fairseq's `transformer*` encoder-decoders, BART's `bart_*` "
                        "and mBART's `mbart_*`")
    dec_dim = a.get("decoder_embed_dim", a["encoder_embed_dim"])
    if dec_dim != a["encoder_embed_dim"]:
        problems.append(f"encoder_embed_dim {a['encoder_embed_dim']} != decoder_embed_dim {dec_dim}")
    for key in ("decoder_output_dim", "decoder_input_dim"):
        if a.get(key) not in (None, dec_dim):
            problems.append(f"{key} {a[key]} != decoder_embed_dim {dec_dim} (projections around the decoder)")
    if a["activation_fn"] not in SUPPORTED_ACTIVATIONS:
        problems.append(f"activation_fn {a['activation_fn']!r}: supported are {', '.join(SUPPORTED_ACTIVATIONS)}")
    for flag, why in (("no_token_positional_embeddings", "models without positional embeddings"),
                      ("adaptive_input", "adaptive input embeddings"),
                      ("cross_self_attention", "cross+self attention"),
                      ("layer_wise_attention", "layer-wise attention"),
                      ("tie_adaptive_weights", "adaptive softmax weight tying"),
                      ("no_cross_attention", "decoders without cross attention")):
        if a.get(flag):
            problems.append(f"{flag}: {why} are not supported")
    if a.get("adaptive_softmax_cutoff"):
        problems.append(f"adaptive_softmax_cutoff {a['adaptive_softmax_cutoff']!r}: adaptive softmax is not supported")
    for key in ("encoder_layers_to_keep", "decoder_layers_to_keep"):
        if a.get(key):
            problems.append(f"{key} {a[key]!r}: layer pruning at load time is not supported")
    made = Architecture(
        arch=arch, encoder_layers=a["encoder_layers"], decoder_layers=a["decoder_layers"],
        embed_dim=a["encoder_embed_dim"],
        encoder_ffn_embed_dim=a["encoder_ffn_embed_dim"], decoder_ffn_embed_dim=a["decoder_ffn_embed_dim"],
        encoder_attention_heads=a["encoder_attention_heads"], decoder_attention_heads=a["decoder_attention_heads"],
        encoder_normalize_before=bool(a["encoder_normalize_before"]),
        decoder_normalize_before=bool(a["decoder_normalize_before"]),
        encoder_learned_pos=bool(a["encoder_learned_pos"]), decoder_learned_pos=bool(a["decoder_learned_pos"]),
        layernorm_embedding=bool(a["layernorm_embedding"]), no_scale_embedding=bool(a["no_scale_embedding"]),
        activation_fn=str(a["activation_fn"]), share_all_embeddings=bool(a["share_all_embeddings"]),
        share_decoder_input_output_embed=bool(a["share_decoder_input_output_embed"] or a["share_all_embeddings"]),
        max_source_positions=a["max_source_positions"], max_target_positions=a["max_target_positions"],
        # fairseq builds decoder.layer_norm only for pre-norm decoders, unless no_decoder_final_norm
        decoder_final_norm=bool(a["decoder_normalize_before"]) and not a["no_decoder_final_norm"],
        dropout=a["dropout"], attention_dropout=a["attention_dropout"],
        activation_dropout=a.get("activation_dropout") or 0.0,
    )
    # the checks the runtime makes too (types, ranges: porting/format.py), every problem at once
    problems += made.problems()
    if problems:
        raise UnsupportedArchitecture(problems)
    return made
