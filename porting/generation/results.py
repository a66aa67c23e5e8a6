"""What a search returns, and fairseq's rules around it that need no tensors: each sentence's max_len,
the finalised hypotheses' order. Shared by porting/generation/beam.py and porting/lean.py (which never
imports torch), so that both apply them alike."""
from __future__ import annotations

from dataclasses import dataclass

from porting.generation.options import GenerationOptions


@dataclass
class Hypothesis:
    tokens: list[int]                 # ends with the end token (</s>); the decoder's start token is not included
    score: float
    positional_scores: list[float]


def length_limits(lengths: list[int], width: int, opts: GenerationOptions, max_positions: int) -> list[int]:
    """Each sentence's max_len, the most tokens before </s>, from its source length (</s> included) and the
    batch's padded width: fairseq's rule takes x to be the width (``batch-width``); by default it is the
    sentence's own length. ValueError where min_len exceeds a sentence's max_len."""
    xs = [width] * len(lengths) if opts.max_len_from == "batch-width" else lengths
    limits = [min(int(opts.max_len_a * x + opts.max_len_b), max_positions - 1) for x in xs]
    if opts.min_len > min(limits):
        raise ValueError(f"min_len {opts.min_len} is larger than max_len {min(limits)} (max_len_a * "
                         f"{'the batch width' if opts.max_len_from == 'batch-width' else 'the source length'}"
                         " + max_len_b, at most the model's positions - 1)")
    return limits


def best_first(scores: list[float]) -> list[int]:
    """The order of a sentence's finalised hypotheses: by normalised score, best first, equal scores in
    the order they ended (as torch.sort(descending=True) orders them: a stable sort)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])
