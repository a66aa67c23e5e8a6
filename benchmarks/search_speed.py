"""Grid search vs the same settings run one by one, in one run:

    .venv/bin/python benchmarks/search_speed.py [--model DIR] [--lines 200]

(1) `porting search` over the grid, (2) one `porting bleu` process per setting (what a shell loop
over run_eval does: each loads the model and encodes every sentence again). Prints both wall times
and their ratio, and checks that both produced the same BLEU per setting.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
GRID = "beam=5:8 lenpen=0.6:0.8:1.0:1.2"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="converted model (default: convert the shipped ende-sep)")
    ap.add_argument("--lines", type=int, default=200)
    args = ap.parse_args()
    from parity import shipped
    from porting.evaluation.grid import parse_grid

    work = Path(tempfile.mkdtemp(prefix="search-bench-"))
    model = args.model
    if model is None:
        m = shipped.catalog()["ende-sep"]
        model = work / "ende-sep"
        subprocess.run([sys.executable, "-m", "porting_cli", "convert", "fairseq", "--checkpoint", m.path / "model2.pt",
                        "--data-dir", m.path, "--out", model], check=True, capture_output=True)
    src, ref = shipped.test_set(split="valid")
    (work / "v.en").write_text("\n".join(src[:args.lines]) + "\n", encoding="utf-8")
    (work / "v.de").write_text("\n".join(ref[:args.lines]) + "\n", encoding="utf-8")
    porting = [sys.executable, "-m", "porting_cli"]

    t0 = time.perf_counter()
    subprocess.run([*porting, "search", "--model", model, "--input", work / "v.en", "--reference", work / "v.de",
                    "--search", GRID, "--out", work / "search"], check=True, capture_output=True)
    grid = time.perf_counter() - t0
    results = json.loads((work / "search" / "results.json").read_text())["results"]

    one_by_one, agree = 0.0, 0
    for setting, rec in zip(parse_grid(GRID), results):
        flags = [x for k, v in setting.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        t0 = time.perf_counter()
        r = subprocess.run([*porting, "bleu", "--model", model, "--input", work / "v.en", "--reference", work / "v.de",
                            "--json", *flags], check=True, capture_output=True, text=True)
        one_by_one += time.perf_counter() - t0
        agree += json.loads(r.stdout)["bleu"] == rec["bleu"]
    n = len(results)
    print(f"grid {GRID!r}: {n} settings, {args.lines} lines")
    print(f"porting search (one process, encoder once): {grid:7.1f} s")
    print(f"{n} x porting bleu (one process each):       {one_by_one:7.1f} s")
    print(f"ratio search / independent runs: {grid / one_by_one:.2f}   (same BLEU for {agree} of {n} settings)")


if __name__ == "__main__":
    main()
