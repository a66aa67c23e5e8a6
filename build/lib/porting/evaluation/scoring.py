"""Scoring translations honestly: sacreBLEU on detokenized output, with signatures, and paired
significance between two systems (sacreBLEU's own implementations; BLEU is never reimplemented)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sacrebleu.metrics import BLEU, CHRF

from porting.files import read_lines


class DataError(ValueError):
    pass


def read_aligned(files: dict[str, Path | None]) -> dict[str, list[str]]:
    """Each named file's lines (None entries skipped); every problem reported at once: a missing,
    undecodable or empty file, and files whose line counts differ."""
    problems, texts = [], {}
    for name, path in files.items():
        if path is None:
            continue
        if not Path(path).is_file():
            problems.append(f"--{name} {path}: no such file")
            continue
        try:
            texts[name] = read_lines(path)
        except UnicodeDecodeError as e:
            problems.append(f"--{name} {path}: not UTF-8 ({e})")
            continue
        if not texts[name]:
            problems.append(f"--{name} {path}: empty file")
    counts = {files[name]: len(lines) for name, lines in texts.items() if lines}
    if len(set(counts.values())) > 1:
        problems.append("line counts differ: " + ", ".join(f"{path} has {n}" for path, n in counts.items()))
    if problems:
        raise DataError("\n".join(problems))
    return texts


def read_parallel(source: Path, reference: Path | None) -> tuple[list[str], list[str] | None]:
    """Source and reference lines (None without a reference file); every problem reported at once."""
    texts = read_aligned({"input": source, "reference": reference})
    return texts["input"], texts.get("reference")


@dataclass
class Scores:
    bleu: float
    chrf: float
    bleu_signature: str
    chrf_signature: str

    def to_dict(self) -> dict:
        return {"bleu": round(self.bleu, 2), "chrf": round(self.chrf, 2),
                "bleu_signature": self.bleu_signature, "chrf_signature": self.chrf_signature}


def score(hypotheses: list[str], references: list[str]) -> Scores:
    bleu, chrf = BLEU(), CHRF()
    return Scores(bleu.corpus_score(hypotheses, [references]).score, chrf.corpus_score(hypotheses, [references]).score,
                  str(bleu.get_signature()), str(chrf.get_signature()))


# sacreBLEU's metrics by the names its command line gives them (-m bleu chrf ter).
METRICS = ("bleu", "chrf", "ter")


def sacrebleu_metrics(names: list[str], tokenize: str | None = None, lowercase: bool = False) -> dict:
    """sacreBLEU metric objects as its command line builds them from -m, --tokenize and --lowercase
    (tokenize None: sacreBLEU's own default, 13a). Their signatures record these choices.
    TER stays case-insensitive whatever --lowercase says, as sacreBLEU's command line has it
    (its --ter-case-sensitive defaults to off), so its TER numbers are ours."""
    from sacrebleu.metrics import TER

    made = {"bleu": lambda: BLEU(tokenize=tokenize, lowercase=lowercase),
            "chrf": lambda: CHRF(lowercase=lowercase),
            "ter": lambda: TER(case_sensitive=False)}
    return {name: made[name]() for name in names}


def sacrebleu_results(hypotheses: list[str], references: list[list[str]], metrics: dict, width: int,
                      confidence_n: int | None = None, as_json: bool = False) -> list[str]:
    """Each metric's score formatted exactly as ``sacrebleu`` prints it (its text line or its JSON
    object, full signature), with bootstrap confidence intervals when confidence_n is given."""
    out = []
    for name in sorted(metrics):                       # sacreBLEU's own order
        metric = metrics[name]
        result = metric.corpus_score(hypotheses, references, n_bootstrap=confidence_n or 1)
        out.append(result.format(width, False, metric.get_signature().format(False), as_json))
    return out


def paired_bootstrap(baseline: list[str], system: list[str], references: list[str], samples: int = 1000) -> dict:
    """sacreBLEU's paired bootstrap resampling: is `system` different from `baseline`?

    Identical outputs are not sent to the test: sacreBLEU counts only resamples *strictly* beyond the
    observed difference, so two identical systems (difference 0 everywhere) get p = 1/(n+1), which
    reads as "significant". There is no difference to test; p is reported as 1.0 with a note."""
    from sacrebleu.significance import PairedTest

    if list(baseline) == list(system):
        bleu = BLEU()
        b = round(bleu.corpus_score(baseline, [references]).score, 2)
        return {"baseline_bleu": b, "system_bleu": b, "p_value": 1.0, "identical": True,
                "note": "identical outputs: nothing to test", "signature": str(bleu.get_signature()),
                "samples": 0}

    sigs, results = PairedTest([("baseline", baseline), ("system", system)], {"BLEU": BLEU()},
                               references=[references], test_type="bs", n_samples=samples)()
    base, sys_ = results["BLEU"]
    return {"baseline_bleu": round(base.score, 2), "system_bleu": round(sys_.score, 2),
            "p_value": sys_.p_value, "identical": False, "signature": str(sigs["BLEU"]), "samples": samples}
