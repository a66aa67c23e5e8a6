"""Start-up: one line translated as a whole process, the way a user runs it once, beside what bounds it.

    .venv/bin/python benchmarks/startup.py [--runs 5] [--work .build/bench] [--out .build/bench/startup.json]

Rows, each the median (and range) of --runs fresh processes after one warm-up run (the kernels compiled,
the files in the page cache), taking turns:
  * `porting translate` on the shipped ende-sep model: `echo LINE | porting translate --model DIR`
    (the lean path, porting/lean.py: no torch), and the same with PORTING_LEAN=0 (torch's Translator);
  * CTranslate2: python, `import ctranslate2`, the converted float32 model loaded, the line's tokens
    (given, already tokenized: its tokenizer is not timed) translated at beam 5;
  * `python -c "import torch"` and `python -c pass`: the floors.
Issue 32's target: the first row at most 1.0 s.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

LINE = "This is a test."


def timed(command: list[str], stdin: str = "", env: dict | None = None) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr.strip()[-500:]}")
    return seconds, done.stdout.strip()


def systems(converted: str, ct2: str, tokens: list[str]) -> dict[str, tuple[list[str], str, dict]]:
    python, porting = sys.executable, str(Path(sys.executable).parent / "porting")
    ct2_code = ("import ctranslate2\nt = ctranslate2.Translator(%r, device='cpu', intra_threads=2)\n"
                "print(' '.join(t.translate_batch([%r], beam_size=5)[0].hypotheses[0]))" % (ct2, tokens))
    return {
        "porting translate (lean)": ([porting, "translate", "--model", converted], LINE + "\n", {}),
        "porting translate (torch)": ([porting, "translate", "--model", converted], LINE + "\n", {"PORTING_LEAN": "0"}),
        "ctranslate2 (tokens given)": ([python, "-c", ct2_code], "", {}),
        "python -c 'import torch'": ([python, "-c", "import torch"], "", {}),
        "python -c pass": ([python, "-c", "pass"], "", {}),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--work", type=Path, default=ROOT / ".build" / "bench")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    from benchmarks.speed import conditions, model_setups, prepare
    from porting.tokenizer import open_tokenizer, vocabularies

    paths = prepare("shipped", model_setups(args.work)["shipped"], args.work)
    source_symbols, _ = vocabularies(paths["converted"])
    pieces = [source_symbols[i] for i in open_tokenizer(paths["converted"]).encode(LINE)]
    runs = systems(paths["converted"], paths["ct2"], pieces)
    outputs = {name: timed(command, stdin, env)[1] for name, (command, stdin, env) in runs.items()}   # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.runs):
        for name, (command, stdin, env) in runs.items():
            times[name].append(timed(command, stdin, env)[0])
    signature = {**conditions(2), "line": LINE, "runs": args.runs}
    print("|".join(f"{k}:{v}" for k, v in signature.items()))
    print(f"\n{'what':32} {'median s':>9} {'min':>6} {'max':>6}  output")
    rows = []
    for name, seconds in times.items():
        rows.append({"system": name, "median": statistics.median(seconds), "all": seconds, "output": outputs[name]})
        print(f"{name:32} {statistics.median(seconds):9.2f} {min(seconds):6.2f} {max(seconds):6.2f}  {outputs[name][:40]}")
    out = args.out or args.work / "startup.json"
    out.write_text(json.dumps({"conditions": signature, "rows": rows}, indent=1) + "\n")
    print(f"\nresults in {out}")


if __name__ == "__main__":
    main()
