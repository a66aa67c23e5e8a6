"""The generation options, declared once: named as fairseq names them, with their defaults, their
help, the values they take and whether a grid search may vary them. The command-line flags
(porting_cli.common), the grid-search keys (porting.evaluation.grid), the defaults a conversion
writes into generation_config.json (converters) and the validation all come from this class.
"""
# No `from __future__ import annotations` here: the fields' types are read at run time (flags, grid).
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable


def option(default, help: str, choices: tuple[str, ...] | None = None, searchable: bool = True,
           fairseq: bool = True, parse: Callable[[str], Any] | None = None):
    """A field with what the flags and the grid need. fairseq: one of the options a conversion
    records as the model's defaults; parse: how a grid value is read (default: the field's type)."""
    return dataclasses.field(default=default, metadata={
        "help": help, "choices": choices, "searchable": searchable, "fairseq": fairseq, "parse": parse})


def _early_stopping(value: str) -> str:
    return {"1": "true", "0": "false"}.get(value.lower(), value.lower())


EARLY_STOPPING = ("fairseq", "true", "false", "never")
NGRAM_BLOCKING = ("correct", "fairseq")
MAX_LEN_FROM = ("source", "batch-width")


@dataclass(frozen=True)
class GenerationOptions:
    beam: int = option(5, "beam width (1: greedy decoding)")
    nbest: int = option(1, "hypotheses returned per line (at most beam)", searchable=False)
    lenpen: float = option(1.0, "length penalty: scores are divided by length ** lenpen")
    unkpen: float = option(0.0, "subtracted from <unk>'s log-probability (negative: a bonus)")
    min_len: int = option(1, "</s> is not allowed before this many tokens")
    max_len_a: float = option(0.0, "length cap a*x + b (x: the source's length, </s> included)")
    max_len_b: int = option(200, "length cap a*x + b")
    # "source": x is each sentence's own length, as fairseq documents the cap; a sentence's output
    #           never depends on the other sentences of its batch (shards, batch sizes).
    # "batch-width": x is the batch's padded width, as fairseq's SequenceGenerator computes it
    #           (max_len_a * src_tokens.size(1)): for reproducing its outputs bug for bug.
    max_len_from: str = option("source", "what x is in the length cap: each sentence's own length, or "
                               "'batch-width' as fairseq computes it (porting/NOTES.md)", choices=MAX_LEN_FROM,
                               searchable=False, fairseq=False)
    no_repeat_ngram_size: int = option(0, "ban repeating n-grams of this size (0: off)")
    # "correct": ban every token that would repeat an n-gram of the hypothesis (fairseq's intent).
    # "fairseq": fairseq >= commit 8ca4813 on CPU, which compares against padding and never bans
    #            (fairseq issues #4709, #5206): for reproducing its outputs bug for bug.
    ngram_blocking: str = option("correct", "'fairseq' reproduces fairseq's inert CPU n-gram blocker "
                                 "(porting/NOTES.md)", choices=NGRAM_BLOCKING, searchable=False, fairseq=False)
    # "fairseq": a sentence is done once `beam` hypotheses ended (the first ones, kept as found).
    # "true" / "false" / "never": transformers' beam search rules (early_stopping=True/False/"never"):
    #     the best `beam` ended hypotheses are kept, and a sentence is done when that set is full and
    #     (true) at once, (false) the best running hypothesis, normalised at its current length,
    #     cannot beat the worst kept one, (never) the same bound at the maximum length when lenpen > 0.
    # Every other option keeps fairseq's meaning in all modes.
    early_stopping: str = option("fairseq", "fairseq's stopping rule, or transformers' early_stopping="
                                 "True/False/'never'", choices=EARLY_STOPPING, parse=_early_stopping)

    def __post_init__(self):
        problems = [p for f in fields() if (p := _type_problem(f, getattr(self, f.name)))]
        if problems:                     # ranges mean nothing on values of the wrong type
            raise ValueError("; ".join(problems))
        if self.beam < 1:
            problems.append(f"beam must be >= 1, got {self.beam}")
        if not 1 <= self.nbest <= self.beam:
            problems.append(f"nbest must be between 1 and beam ({self.beam}), got {self.nbest}")
        for name in ("min_len", "no_repeat_ngram_size", "max_len_a", "max_len_b"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        for f in fields():
            choices = f.metadata["choices"]
            if choices and getattr(self, f.name) not in choices:
                problems.append(f"{f.name} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        if problems:
            raise ValueError("; ".join(problems))


def _type_problem(f: dataclasses.Field, value) -> str | None:
    """Why a value cannot be this option: a wrong type, or a float that is not finite (a NaN length
    penalty makes every score NaN; an infinite <unk> penalty makes every output <unk>)."""
    if f.type is int and (not isinstance(value, int) or isinstance(value, bool)):
        return f"{f.name} must be an integer, got {value!r}"
    if f.type is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            return f"{f.name} must be a number, got {value!r}"
        if not math.isfinite(value):
            return f"{f.name} must be finite, got {value!r}"
    if f.type is str and not isinstance(value, str):
        return f"{f.name} must be a string, got {value!r}"
    return None


def fields() -> tuple[dataclasses.Field, ...]:
    return dataclasses.fields(GenerationOptions)


def names() -> tuple[str, ...]:
    return tuple(f.name for f in fields())


def searchable() -> dict[str, Callable[[str], Any]]:
    """Grid-search key -> the parser of one value."""
    return {f.name: f.metadata["parse"] or f.type for f in fields() if f.metadata["searchable"]}


def fairseq_defaults() -> dict[str, Any]:
    """fairseq's own generation defaults (fairseq.dataclass.configs.GenerationConfig), as a
    conversion records them in generation_config.json."""
    return {f.name: f.default for f in fields() if f.metadata["fairseq"]}
