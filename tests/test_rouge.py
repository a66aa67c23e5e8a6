"""ROUGE for summaries (-m rouge): the numbers are rouge-score's, through every command that takes it;
its paired test is sacreBLEU's paired bootstrap on per-line scores; a search tunes on ROUGE-L."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from rouge_score import rouge_scorer

from parity import shipped
from porting.evaluation.scoring import ROUGE_TYPES, TUNING, Rouge, paired_bootstrap_lines
from porting_cli import main

LINES = 40


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """40 shipped English test lines as references, two 'systems' made from them by dropping words."""
    d = tmp_path_factory.mktemp("rouge")
    refs = shipped.test_set()[0][:LINES]
    short = [" ".join(line.split()[: max(1, len(line.split()) // 2)]) for line in refs]
    other = [" ".join(line.split()[1:]) or line for line in refs]
    for name, lines in (("ref", refs), ("short", short), ("other", other)):
        (d / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return d, refs, short, other


def by_rouge_score(hyps: list[str], refs: list[str], multi: list[str] | None = None) -> dict[str, float]:
    """rouge-score called directly, as HF evaluate calls it (stemmer on), F1 averaged over lines, x100."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rows = [scorer.score(r, h) if multi is None else scorer.score_multi([r, m], h)
            for h, r, m in zip(hyps, refs, multi or refs)]
    return {t: 100 * sum(r[t].fmeasure for r in rows) / len(rows) for t in ROUGE_TYPES}


def test_the_command_prints_rouge_scores_numbers(texts):
    d, refs, short, other = texts

    def command(*refs_files):
        r = subprocess.run([sys.executable, "-m", "porting_cli", "bleu", "--hypotheses", str(d / "short"),
                            "--reference", *map(str, refs_files), "-m", "rouge", "--json", "-w", "4"],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        return {row["name"]: row for row in json.loads(r.stdout)}
    got = command(d / "ref")
    want = by_rouge_score(short, refs)
    assert {t: got[t]["score"] for t in ROUGE_TYPES} == {t: round(v, 4) for t, v in want.items()}
    assert "stem:porter" in got["rougeL"]["signature"] and "nrefs:1" in got["rougeL"]["signature"]
    assert got["rouge1"]["score"] != got["rouge2"]["score"]            # the types are not one number four times
    two = command(d / "ref", d / "other")                                # several references: each line's best
    assert {t: two[t]["score"] for t in ROUGE_TYPES} == {t: round(v, 4) for t, v in by_rouge_score(short, refs, other).items()}
    assert "nrefs:2" in two["rouge1"]["signature"]


def test_rouge_and_sacrebleu_metrics_print_together_and_refuse_what_rouge_ignores(texts):
    d, *_ = texts
    run = [sys.executable, "-m", "porting_cli", "bleu", "--hypotheses", str(d / "short"), "--reference", str(d / "ref")]
    r = subprocess.run([*run, "-m", "bleu", "rouge"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.splitlines()[0].startswith("BLEU|")
    assert [line.split("|")[0] for line in r.stdout.splitlines()[1:]] == list(ROUGE_TYPES)
    for flags, says in ((["-m", "rouge", "--tokenize", "intl"], "--tokenize"), (["-m", "rouge", "--confidence"], "--confidence")):
        r = subprocess.run([*run, *flags], capture_output=True, text=True)
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr


class _LineMean:
    """ROUGE-L as a sacreBLEU metric would be one: per-line statistics [F1, 1], the score their ratio.
    Enough of sacreBLEU's metric interface for its own paired bootstrap to run on it."""

    def __init__(self, references: list[str]):
        self.references = references

    def _extract_corpus_statistics(self, hypotheses, references):
        return [[s, 1.0] for s in Rouge().line_scores(hypotheses, [self.references])["rougeL"]]

    def _aggregate_and_compute(self, stats):
        return SimpleNamespace(score=sum(s for s, _ in stats) / len(stats))

    def _compute_score_from_stats(self, stats):
        return SimpleNamespace(score=stats[0] / stats[1])


def test_the_paired_test_is_sacrebleus_paired_bootstrap(texts):
    """Our p-value against sacreBLEU's own paired bootstrap run on the same per-line scores, same seed,
    for pairs of systems from clearly apart to indistinguishable (p from 0.001 to about 0.27)."""
    from sacrebleu.significance import _paired_bs_test

    _, refs, _, _ = texts
    half = [" ".join(line.split()[: max(1, len(line.split()) // 2)]) for line in refs]
    baseline = [(" ".join(line.split()[1:]) or line) if i % 3 == 0 else line for i, line in enumerate(refs)]
    rouge, metric, seen = Rouge(), _LineMean(refs), []
    base_stats = metric._extract_corpus_statistics(baseline, None)
    for every in (1, 2, 3, 5):
        system = [half[i] if i % every == 0 else line for i, line in enumerate(refs)]
        _, theirs = _paired_bs_test({"R": (base_stats, metric._aggregate_and_compute(base_stats))}, "sys", system,
                                    None, {"R": metric}, n_samples=1000, seed=12345)
        ours = paired_bootstrap_lines(rouge.line_scores(baseline, [refs])["rougeL"],
                                      rouge.line_scores(system, [refs])["rougeL"])
        # equal; sacreBLEU keeps its statistics in float32, so a resample on the boundary could move one count
        assert abs(ours - theirs["R"].p_value) <= 1 / 1001, every
        seen.append(ours)
    assert min(seen) < 0.01 and max(seen) > 0.2          # the comparison covered both ends


def test_the_paired_test_tells_worse_from_the_same(texts):
    _, refs, short, _ = texts
    paired = TUNING["rouge"].paired
    same = paired(short, list(short), refs)
    assert same["identical"] and same["p_value"] == 1.0
    worse = paired(refs, short, refs)                      # half of every line dropped
    assert worse["system_score"] < worse["baseline_score"] and worse["p_value"] < 0.05
    one_word = list(refs)
    one_word[0] = one_word[0] + " again"
    assert paired(refs, one_word, refs)["p_value"] > 0.05   # one line's one word: no evidence


def test_search_tunes_on_rouge_l(converted, tmp_path, capsys):
    """The grid's records hold rouge-score's numbers for each setting's output, the best is ROUGE-L's,
    and the held-out report uses ROUGE-L's paired test."""
    from porting.translator import Translator

    src, ref = shipped.test_set(split="valid")
    (tmp_path / "in").write_text("\n".join(src[:20]) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("\n".join(ref[:20]) + "\n", encoding="utf-8")
    rc = main(["search", "--model", str(converted["ende-sep"]), "--input", str(tmp_path / "in"), "--reference",
               str(tmp_path / "ref"), "--search", "beam=1:3 lenpen=0.5:1.5", "-m", "rouge", "--out", str(tmp_path / "out"),
               "--test-input", str(tmp_path / "in"), "--test-reference", str(tmp_path / "ref")])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.index("rougeL | rouge1 | rouge2 | beam | lenpen") < out.index("best setting ROUGE-L")
    report = json.loads((tmp_path / "out" / "results.json").read_text())
    t = Translator.from_pretrained(converted["ende-sep"])
    for r in report["results"]:
        direct = by_rouge_score(t.translate(src[:20], **r["setting"]), ref[:20])
        kinds = ("rouge1", "rouge2", "rougeL")
        assert {k: r[k] for k in kinds} == {k: round(direct[k], 2) for k in kinds}
    best = max(report["results"], key=lambda r: (r["rougeL"], r["rouge1"], r["rouge2"]))
    assert report["metric"] == "rouge" and report["best"] == best["setting"] and report["best_rougeL"] == best["rougeL"]
    assert report["test"]["paired_bootstrap"]["metric"] == "rougeL" and "rouge-score" in report["signature"]


def test_select_ranks_by_rouge_l(tmp_path, capsys):
    m = shipped.catalog()["ende-sep"]
    src, ref = shipped.test_set(split="valid")
    (tmp_path / "in").write_text("\n".join(src[:20]) + "\n", encoding="utf-8")
    (tmp_path / "ref").write_text("\n".join(ref[:20]) + "\n", encoding="utf-8")
    assert main(["select", "--checkpoint", str(m.path / "model1.pt"), "--checkpoint", str(m.path / "model2.pt"),
                 "--data-dir", str(m.path), "--input", str(tmp_path / "in"), "--reference", str(tmp_path / "ref"),
                 "--out", str(tmp_path / "sel"), "--beam", "2", "-m", "rouge"]) == 0
    out = capsys.readouterr().out
    rows = [line.split(" | ") for line in out.splitlines() if line.count(" | ") == 3 and not line.startswith(("rougeL", "-"))]
    assert out.splitlines()[2] == "rougeL | rouge1 | rouge2 | model" and len(rows) == 3
    assert [float(r[0]) for r in rows] == sorted((float(r[0]) for r in rows), reverse=True)
    assert "rouge-score" in out.splitlines()[0]


def test_parity_tests_the_outcome_with_rouge_l(converted, tmp_path):
    """parity -m rouge: the report scores both sides with ROUGE and the outcome rule tests ROUGE-L."""
    run = shipped.RUNS / "ende-sep"
    assert main(["parity", "--original", f"recorded:{run}", "--port", str(converted["ende-sep"]), "--report",
                 str(tmp_path / "r"), "--settings", "greedy", "-m", "rouge"]) == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    outcome = report["generation"]["greedy"]["outcome"]
    assert outcome["metric"] == "ROUGE-L" and outcome["p_value"] == 1.0 and "rouge-score" in outcome["signature"]
    assert report["scores"]["port"]["rougeL"] == report["scores"]["original"]["rougeL"]
    md = (tmp_path / "r" / "report.md").read_text()
    assert "ROUGE-L port / original" in md and "## ROUGE-L" in md and "rougeL " in md


def test_the_rouge_outcome_fails_a_port_significantly_worse(texts):
    """The outcome rule with ROUGE-L: half of every line dropped fails; the same outputs pass."""
    from parity.harness import _outcome

    _, refs, short, _ = texts
    rec = {"hypotheses": [[{"text": r}] for r in refs]}
    worse = _outcome(refs, rec, short, TUNING["rouge"])
    assert worse["significantly_worse"] and worse["metric"] == "ROUGE-L" and worse["port"] < worse["original"]
    same = _outcome(refs, rec, list(refs), TUNING["rouge"])
    assert not same["significantly_worse"] and same["p_value"] == 1.0


def test_a_bleu_grid_state_is_not_resumed_as_a_rouge_one(converted, tmp_path):
    """The metric is part of what a kept grid record belongs to: a search's state file written under -m bleu
    is not taken as the finished settings of the same grid under -m rouge (it holds no ROUGE)."""
    from porting.evaluation.grid import parse_grid, run_grid

    src, ref = shipped.test_set(split="valid")
    state, grid = tmp_path / "state.jsonl", parse_grid("beam=1:2")
    bleu = run_grid([converted["ende-sep"]], src[:8], ref[:8], grid, {}, state)
    rouge = run_grid([converted["ende-sep"]], src[:8], ref[:8], grid, {}, state, metric=TUNING["rouge"])
    assert all("bleu" in r and "rougeL" not in r for r in bleu)
    assert all("rougeL" in r and r["fingerprint"] != bleu[0]["fingerprint"] for r in rouge)
    assert run_grid([converted["ende-sep"]], src[:8], ref[:8], grid, {}, state) == bleu    # each resumes its own
