"""Approximate ports (bf16, fp16, int8, int16): what each may cost, declared once, and the measures
that hold a port to it.

A port that computes in another type than the original's float32 cannot be identical; the question
its user asks is how much it costs, where, and whether that is acceptable. The harness answers with
a budget per type (``BUDGETS``), on three measures:

- **tensors**: at every layer boundary the system exposes, the signal-to-quantization-noise ratio,
  10·log10(‖original‖² / ‖original − port‖²) in dB (PyTorch's numeric suite reports the same
  per-layer SQNR; its own tests ask for at least 30 dB of an int8 layer), of the worst sentence;
- **log-probs**: teacher-forced on the original's best hypotheses of the main setting, the
  distribution of the per-token error |port − original| (max, p99, mean);
- **outcome**: best hypotheses compared as for any port, a difference whose teacher-forced log-prob
  error stays inside the budget is caused by ``approximation``, beyond it by ``numerics``; and the
  metric's paired bootstrap (a port significantly worse fails).

Budget keys are the weight type: CTranslate2's compute types "int8_float32", "int8_bfloat16"... are
int8's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import numpy as np


@dataclass(frozen=True)
class Budget:
    """What a type may cost; every field is a bound a port fails beyond."""
    min_sqnr_db: float      # every teacher-forced tensor boundary, error accumulated from the tokens on
    token_max: float        # the largest per-token |Δ log-prob| on the original's hypotheses
    token_p99: float        # its 99th percentile
    evidence: str = ""      # the measurement the bound comes from

    def to_dict(self) -> dict:
        return asdict(self)


# Measured on the shipped models (reference_runs/models: ende-sep, ende-joined, m2m-enfres en-fr,
# bart-man, mbart-enro; recorded runs replayed on this machine; tests/test_approximate.py and the
# README's table), each bound the worst clean measurement with a margin; the faults of
# tests/test_approximate.py (one int8 layer's rows scaled x4, one bf16 layer's weights perturbed) land
# far beyond them. The numbers behind each bound are in its evidence.
BUDGETS = {
    "bfloat16": Budget(
        min_sqnr_db=20.0, token_max=1.0, token_p99=0.15,
        evidence="native bf16, worst over the shipped models: SQNR 27.8 dB (ende-sep decoder.logits), per-token "
                 "|Δ log-prob| max 0.47, p99 0.072"),
    "float16": Budget(
        min_sqnr_db=35.0, token_max=0.1, token_p99=0.02,
        evidence="transformers fp16, worst over the shipped models: SQNR 45.9 dB, per-token |Δ log-prob| max 0.031, "
                 "p99 0.0058"),
    "int8": Budget(
        min_sqnr_db=15.0, token_max=2.0, token_p99=0.35,
        evidence="native int8 and CTranslate2 int8_float32, worst over the shipped models: SQNR 21.7 dB, per-token "
                 "|Δ log-prob| max 1.03, p99 0.17"),
    "int16": Budget(
        min_sqnr_db=35.0, token_max=0.1, token_p99=0.02,
        evidence="CTranslate2 int16 (no tensors): per-token |Δ log-prob| max 0.02, p99 0.004"),
}

FIELDS = ("min_sqnr_db", "token_max", "token_p99")


def budget_for(approximation: str) -> Budget:
    """The declared budget of a system's type ("int8_float32" is int8's)."""
    key = approximation if approximation in BUDGETS else approximation.split("_")[0]
    if key not in BUDGETS:
        raise KeyError(f"no budget is declared for {approximation!r} (declared: {', '.join(BUDGETS)}): give --budget")
    return BUDGETS[key]


def parse_overrides(text: str) -> dict[str, float]:
    """``min_sqnr_db=25,token_max=0.5``: the fields a user's --budget replaces (ValueError naming every
    bad part at once)."""
    out, bad = {}, []
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, sep, value = part.partition("=")
        try:
            if not sep or key not in FIELDS:
                raise ValueError
            out[key] = float(value)
            if not math.isfinite(out[key]) or out[key] < 0:
                raise ValueError
        except ValueError:
            bad.append(part)
    if bad or not out:
        raise ValueError(f"--budget: {', '.join(bad) or 'nothing given'}: give FIELD=NUMBER pairs (a number at least "
                         f"0), comma-separated, FIELD one of {', '.join(FIELDS)}")
    return out


def budget(approximation: str, overrides: dict[str, float] | None = None) -> Budget:
    """The budget a run holds a system to: the declared one, with a user's overrides."""
    if overrides and approximation not in BUDGETS and approximation.split("_")[0] not in BUDGETS:
        return Budget(**{**dict.fromkeys(FIELDS, math.inf), **overrides}, evidence="given with --budget")
    declared = budget_for(approximation)
    if not overrides:
        return declared
    return replace(declared, **overrides, evidence=f"given with --budget ({', '.join(f'{k}={v:g}' for k, v in overrides.items())}); "
                                                    f"declared: {declared.evidence}")


def sqnr_db(nmse: float) -> float:
    """Signal-to-quantization-noise ratio of a normalised MSE (inf: no error at all)."""
    return math.inf if nmse == 0 else -10.0 * math.log10(nmse)


def error_distribution(errors: list[float]) -> dict:
    """max, p99 and mean of per-token errors."""
    if not errors:
        return {"tokens": 0, "max": 0.0, "p99": 0.0, "mean": 0.0}
    e = np.asarray(errors, dtype=np.float64)
    return {"tokens": int(e.size), "max": float(e.max()), "p99": float(np.percentile(e, 99)), "mean": float(e.mean())}


def log_prob_verdict(dist: dict, b: Budget) -> list[str]:
    """The log-prob bounds a distribution exceeds, as sentences (empty: within budget)."""
    out = []
    if dist["max"] > b.token_max:
        out.append(f"per-token |Δ log-prob| max {dist['max']:.3g} beyond the budget's {b.token_max:g}")
    if dist["p99"] > b.token_p99:
        out.append(f"per-token |Δ log-prob| p99 {dist['p99']:.3g} beyond the budget's {b.token_p99:g}")
    return out
