"""The speed benchmark's harness (benchmarks/speed.py): how rounds merge, and one tiny end-to-end run.
Speed itself is never asserted here; only that the harness reports what it measured."""
from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import requires_fairseq

ROOT = Path(__file__).resolve().parents[1]
SPEED = ROOT / "benchmarks" / "speed.py"


@functools.cache
def _speed_module():
    spec = importlib.util.spec_from_file_location("bench_speed", SPEED)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _result(seconds, hypotheses=((4, 5, 2),), rss=100):
    return {"seconds": min(seconds), "all_seconds": list(seconds), "hypotheses": [list(h) for h in hypotheses],
            "fed": [[7, 2]], "peak_rss": rss}


def test_rounds_merge_to_the_fastest_repetition_and_keep_every_time():
    merge = _speed_module().merge_rounds
    first = merge(None, _result([0.30, 0.25], rss=120), "port")
    both = merge(first, _result([0.20, 0.40], rss=100), "port")
    assert both["seconds"] == 0.20
    assert both["all_seconds"] == [0.30, 0.25, 0.20, 0.40]
    assert both["peak_rss"] == 120


def test_rounds_that_translate_differently_stop_the_run():
    merge = _speed_module().merge_rounds
    first = merge(None, _result([0.3]), "port")
    with pytest.raises(SystemExit, match="translated differently"):
        merge(first, _result([0.3], hypotheses=[(4, 6, 2)]), "port")


def test_an_error_in_a_later_round_is_the_result():
    merge = _speed_module().merge_rounds
    first = merge(None, _result([0.3]), "port")
    assert merge(first, {"error": "boom"}, "port") == {"error": "boom"}


@requires_fairseq
def test_tiny_benchmark_run_reports_both_systems_on_the_same_inputs(tmp_path):
    """fairseq, the port and CTranslate2 (float32 and int8, written by porting convert ctranslate2) on
    4 shipped lines, 2 rounds x 1 repetition (~30 s)."""
    out = tmp_path / "speed.json"
    run = subprocess.run([sys.executable, str(SPEED), "--models", "shipped", "--batch-sizes", "1",
                          "--systems", "port,fairseq,ctranslate2,ctranslate2-int8", "--lines", "4",
                          "--rounds", "2", "--repeat", "1",
                          "--threads", "1", "--work", str(tmp_path / "work"), "--out", str(out)],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["system"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"fairseq", "port", "ctranslate2", "ctranslate2-int8"}
    for row in rows.values():
        assert "error" not in row
        assert len(row["all_seconds"]) == 2                       # one repetition in each of two rounds
        assert row["seconds"] == min(row["all_seconds"])
        assert row["lines"] == 4 and row["target_tokens"] > 0
    assert rows["port"]["agree"] == 4                             # the fast port's best hypotheses are fairseq's
    assert rows["ctranslate2"]["agree"] == 4                      # so are CTranslate2's on our conversion
    assert rows["port"]["target_tokens"] == rows["fairseq"]["target_tokens"]
    assert rows["port"]["bleu"] == rows["fairseq"]["bleu"]
    assert rows["fairseq"]["speedup_of_port"] == pytest.approx(rows["port"]["tok_s"] / rows["fairseq"]["tok_s"])
    assert "shipped         1 port" in run.stdout                 # the table is printed
