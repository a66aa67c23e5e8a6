"""Scoring outputs honestly: sacreBLEU on detokenized translations, ROUGE (rouge-score) on summaries,
each number with a signature of what produced it, and paired significance between two systems
(the libraries' own metrics: BLEU and ROUGE are never reimplemented).

``TUNING`` is the one table of what a search, a selection and the parity outcome can rank by
(``-m bleu`` or ``-m rouge``): the record fields it writes, the one it ranks on, its paired test."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

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


# ---------------------------------------------------------------- ROUGE, for summaries

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
BOOTSTRAP_SEED = 12345          # sacreBLEU's default (SACREBLEU_SEED): the same resamples for both metrics


@dataclass(frozen=True)
class Rouge:
    """ROUGE-1/2/L/Lsum F1 from the ``rouge-score`` package (Google's, the implementation HF evaluate
    wraps), x100, averaged over lines: each line is one summary. With several references a line takes
    its best (rouge-score's ``score_multi``).

    rouge-score's tokenizer lowercases and keeps only ``[a-z0-9]`` runs: text in other scripts scores
    nothing (its own limitation, named in the signature as ``tok:rouge-score``). ROUGE-Lsum splits a
    summary into sentences on newlines; a line of a file holds none, so it equals ROUGE-L here
    (``split_summaries``, the nltk sentence splitter, needs a model download this workbench never does).
    """
    use_stemmer: bool = True         # Porter stemming, as BART's and HF's summarization scripts run it

    def _scorer(self):
        from rouge_score import rouge_scorer

        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=self.use_stemmer, split_summaries=False)

    def line_scores(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, list[float]]:
        """Each ROUGE type's F1 per line (x100). references: one list of lines per reference set."""
        scorer, out = self._scorer(), {t: [] for t in ROUGE_TYPES}
        for hyp, *refs in zip(hypotheses, *references):
            scores = scorer.score(refs[0], hyp) if len(refs) == 1 else scorer.score_multi(refs, hyp)
            for t in ROUGE_TYPES:
                out[t].append(100 * scores[t].fmeasure)
        return out

    def corpus_score(self, hypotheses: list[str], references: list[list[str]]) -> dict[str, float]:
        return {t: sum(v) / len(v) for t, v in self.line_scores(hypotheses, references).items()}

    def signature(self, references: int = 1) -> str:
        from importlib.metadata import version

        return (f"nrefs:{references}|f:F1|avg:lines|stem:{'porter' if self.use_stemmer else 'no'}|tok:rouge-score|"
                f"lsum-split:newline|version:rouge-score-{version('rouge-score')}")

    def format(self, hypotheses: list[str], references: list[list[str]], width: int, as_json: bool = False) -> list[str]:
        """One line per ROUGE type as sacreBLEU prints its metrics (``name|signature = score``), or its JSON."""
        import json

        scores, sig = self.corpus_score(hypotheses, references), self.signature(len(references))
        if as_json:
            return [json.dumps({"name": t, "score": round(scores[t], width), "signature": sig,
                                "verbose_score": "F1, mean over lines"}, indent=1, ensure_ascii=False)
                    for t in ROUGE_TYPES]
        return [f"{t}|{sig} = {scores[t]:.{width}f}" for t in ROUGE_TYPES]


def paired_bootstrap_lines(baseline: list[float], system: list[float], samples: int = 1000) -> float:
    """sacreBLEU's paired bootstrap test (sacrebleu.significance: resample lines with its seed, the two
    systems' absolute score difference per resample, centred, p = (#above the observed + 1) / (n + 1))
    for a metric that is a mean of per-line scores, which sacreBLEU's PairedTest cannot take (it runs its
    own metrics only). Written out here for that reason; the numbers are numpy's."""
    import numpy as np

    base, sys_ = np.asarray(baseline, dtype=np.float64), np.asarray(system, dtype=np.float64)
    idxs = np.random.default_rng(BOOTSTRAP_SEED).choice(len(base), size=(samples, len(base)), replace=True)
    observed = abs(base.mean() - sys_.mean())
    diffs = np.abs(sys_[idxs].mean(axis=1) - base[idxs].mean(axis=1))
    return (int(np.sum(diffs - diffs.mean() > observed)) + 1) / (samples + 1)


# ---------------------------------------------------------------- what a search, a selection and parity rank by

# A difference counts as shown where its paired bootstrap p-value is under this: a parity port fails a
# setting it scores worse on, a search warns before writing a gain that is not shown.
SIGNIFICANCE = 0.05

@dataclass(frozen=True)
class TunedMetric:
    """A metric a search tunes on, a selection ranks by and the parity outcome tests: the fields it
    adds to a result record (``score``), the ones ranked on in order (``rank``), its paired test."""
    name: str
    rank: tuple[str, ...]
    signature: str                                  # the record's field holding the ranked score's signature
    score: Callable[[list[str], list[str]], dict]
    paired: Callable[[list[str], list[str], list[str]], dict]

    def key(self, record: dict) -> tuple:
        return tuple(record[k] for k in self.rank)

    def best(self, records: list[dict]) -> dict:
        """The record ranked first (the first of equals, in the records' order)."""
        return max(records, key=self.key)

    @property
    def label(self) -> str:
        return {"bleu": "BLEU", "rougeL": "ROUGE-L"}[self.rank[0]]


def _bleu_record(hypotheses: list[str], references: list[str]) -> dict:
    return score(hypotheses, references).to_dict()


def _bleu_paired(baseline: list[str], system: list[str], references: list[str]) -> dict:
    test = paired_bootstrap(baseline, system, references)
    return {**test, "metric": "bleu", "baseline_score": test["baseline_bleu"], "system_score": test["system_bleu"]}


def _rouge_record(hypotheses: list[str], references: list[str]) -> dict:
    rouge = Rouge()
    return {**{t: round(v, 2) for t, v in rouge.corpus_score(hypotheses, [references]).items()},
            "rouge_signature": rouge.signature()}


def _rouge_paired(baseline: list[str], system: list[str], references: list[str], samples: int = 1000) -> dict:
    """ROUGE-L F1's paired bootstrap (paired_bootstrap_lines); identical outputs are not tested, as for BLEU."""
    rouge = Rouge()
    base, sys_ = (rouge.line_scores(h, [references])["rougeL"] for h in (baseline, system))
    b, s_ = round(sum(base) / len(base), 2), round(sum(sys_) / len(sys_), 2)
    identical = list(baseline) == list(system)
    signature = f"bs:{samples}|seed:{BOOTSTRAP_SEED}|" + rouge.signature()
    return {"metric": "rougeL", "baseline_score": b, "system_score": s_,
            "p_value": 1.0 if identical else paired_bootstrap_lines(base, sys_, samples), "identical": identical,
            **({"note": "identical outputs: nothing to test"} if identical else {}),
            "signature": signature, "samples": 0 if identical else samples}


TUNING = {
    "bleu": TunedMetric("bleu", ("bleu", "chrf"), "bleu_signature", _bleu_record, _bleu_paired),
    "rouge": TunedMetric("rouge", ("rougeL", "rouge1", "rouge2"), "rouge_signature", _rouge_record, _rouge_paired),
}
