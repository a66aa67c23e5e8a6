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


# Measured on the shipped models (ende-sep, ende-joined, m2m-enfres en-fr, bart-man, mbart-enro: their
# recorded runs, beam 5 and greedy; `benchmarks/approximation.py`, its table in the README), this CPU's
# own instruction set (AVX-512 with VNNI and BF16). Each bound is the worst clean measurement with a
# margin: 10 dB of SQNR (a tenth of the noise power), about 3x on the log-prob errors. The faults of
# tests/test_approximate.py land beyond them: an int8 layer's rows scaled x4, a bf16 or fp16 layer's
# weights perturbed, an int8 export of a perturbed model.
BUDGETS = {
    "bfloat16": Budget(
        min_sqnr_db=30.0, token_max=0.5, token_p99=0.15,
        evidence="native bf16, worst over the 5 shipped models: least SQNR 40.2 dB (ende-sep, decoder.layers.2), "
                 "per-token |Δ log-prob| max 0.176 (m2m en-fr), p99 0.050 (ende-sep)"),
    "float16": Budget(
        min_sqnr_db=45.0, token_max=0.05, token_p99=0.02,
        evidence="transformers fp16, worst over the 5 shipped models: least SQNR 58.3 dB (ende-sep), per-token "
                 "|Δ log-prob| max 0.0145 (ende-sep), p99 0.0065 (ende-sep)"),
    "int8": Budget(
        min_sqnr_db=20.0, token_max=1.0, token_p99=0.35,
        evidence="native int8 (per-channel weights, dynamic activations) and CTranslate2 int8_float32 on VNNI, worst "
                 "over the 5 shipped models: least SQNR 30.8 dB (native, ende-sep decoder.logits), per-token "
                 "|Δ log-prob| max 0.307 (native, ende-sep), p99 0.140 (native, mbart-enro); CTranslate2 int8 on "
                 "AVX2 without VNNI measures p99 0.45-0.67 and is beyond it (porting/NOTES.md)"),
    "int16": Budget(
        min_sqnr_db=45.0, token_max=0.1, token_p99=0.03,
        evidence="CTranslate2 int16, worst over the 5 shipped models: per-token |Δ log-prob| max 0.033 (ende-joined), "
                 "p99 0.011 (mbart-enro); no int16 system exposes tensors: the SQNR bound is float16's"),
}

FIELDS = ("min_sqnr_db", "token_max", "token_p99")


def _declared_key(approximation: str) -> str | None:
    """The BUDGETS key of a system's type ("int8_float32" is int8's), or None."""
    return next((k for k in (approximation, approximation.split("_")[0]) if k in BUDGETS), None)


def budget_for(approximation: str) -> Budget:
    """The declared budget of a system's type ("int8_float32" is int8's)."""
    key = _declared_key(approximation)
    if key is None:
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
    if overrides and _declared_key(approximation) is None:
        return Budget(**{**dict.fromkeys(FIELDS, math.inf), **overrides}, evidence="given with --budget")
    declared = budget_for(approximation)
    if not overrides:
        return declared
    given = ", ".join(f"{k}={v:g}" for k, v in overrides.items())
    return replace(declared, **overrides, evidence=f"given with --budget ({given}); declared: {declared.evidence}")


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
