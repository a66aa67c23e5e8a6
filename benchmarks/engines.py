"""The engines side by side on this machine, in one run (about 15 minutes on 2 cores):

    .venv/bin/python benchmarks/engines.py [--model DIR] [--bulk-lines 2000] [--grid-lines 200]

Two jobs: a bulk translation (`porting translate --out`) and a grid of 8 settings
(`porting search`), each run sequentially (one process, no engine flags: what a user without a
cluster runs), on the local engine with a process per core (`--jobs`), on Ray embedded in the
process (`--engine ray`), and on a two-node Ray cluster on this machine (`--ray-address`, the
nodes on the loopback interface, one CPU each). Every output is checked to be the sequential
run's, byte for byte (bulk: text; grid: results.json). Ray's fixed cost is measured apart: the
same commands on a one-line input. Each row carries the conditions it was measured under.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PORTING = [sys.executable, "-m", "porting_cli"]
GRID = "beam=1:5 lenpen=0.6:1.0 early_stopping=true:false"       # 8 settings
LOOPBACK = "127.0.0.2"          # loopback that Ray keeps (tests/test_engines.py says why)


def timed(cmd: list, env=None) -> tuple[float, str]:
    """Wall seconds of a command, and its standard output."""
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(f"failed: {' '.join(map(str, cmd))}\n{r.stderr}")
    return time.perf_counter() - start, r.stdout


def start_cluster(work: Path) -> tuple[str, dict]:
    ray = str(Path(sys.executable).parent / "ray")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
    env.pop("RAY_ADDRESS", None)
    port = 6391
    common = ["--node-ip-address", LOOPBACK, "--num-cpus", "1", "--object-store-memory", str(100 * 1024 ** 2),
              "--disable-usage-stats"]
    subprocess.run([ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", *common],
                   check=True, capture_output=True, env=env)
    subprocess.run([ray, "start", "--address", f"{LOOPBACK}:{port}", *common], check=True, capture_output=True, env=env)
    return f"{LOOPBACK}:{port}", env


def stop_cluster(env: dict) -> None:
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True, env=env)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="converted model (default: convert the shipped ende-sep)")
    ap.add_argument("--bulk-lines", type=int, default=2000)
    ap.add_argument("--grid-lines", type=int, default=200)
    args = ap.parse_args()
    import ray
    import torch

    from parity import shipped

    work = Path(tempfile.mkdtemp(prefix="engines-bench-"))
    model = args.model
    if model is None:
        m = shipped.catalog()["ende-sep"]
        model = work / "ende-sep"
        subprocess.run([*PORTING, "convert", "fairseq", "--checkpoint", m.path / "model2.pt", "--data-dir", m.path,
                        "--out", model], check=True, capture_output=True)
    valid, valid_ref = shipped.test_set(split="valid")
    test = shipped.test_set()[0]
    pool = valid + test                                   # 1,000 distinct lines, repeated up to --bulk-lines
    bulk_src = work / "bulk.en"
    bulk_src.write_text("".join(pool[i % len(pool)] + "\n" for i in range(args.bulk_lines)), encoding="utf-8")
    one = work / "one.en"
    one.write_text(pool[0] + "\n", encoding="utf-8")
    (work / "v.en").write_text("".join(s + "\n" for s in valid[:args.grid_lines]), encoding="utf-8")
    (work / "v.de").write_text("".join(s + "\n" for s in valid_ref[:args.grid_lines]), encoding="utf-8")

    cores = os.cpu_count() or 1
    address, cluster_env = start_cluster(work)
    try:
        engines = {                      # flags (None: no engine, the translations on standard output), environment
            "sequential": (None, None),
            f"local --jobs {cores}": (["--jobs", str(cores)], None),
            "ray embedded": (["--engine", "ray"], None),
            "ray two-node": (["--engine", "ray", "--ray-address", address], cluster_env),
        }
        rows, reference = [], None
        for name, (flags, env) in engines.items():
            tag = name.replace(" ", "_")

            def translate(source: Path, out: Path) -> tuple[float, str]:
                cmd = [*PORTING, "translate", "--model", model, "--input", source]
                seconds, stdout = timed(cmd if flags is None else [*cmd, "--out", out, *flags], env)
                return seconds, stdout if flags is None else out.read_text(encoding="utf-8")

            bulk_s, text = translate(bulk_src, work / f"bulk-{tag}.de")
            reference = reference if reference is not None else text
            assert text == reference, f"{name}: the bulk output differs from the sequential run's"
            fixed_s, _ = translate(one, work / f"one-{tag}.de")
            grid_dir = work / f"grid-{tag}"
            grid_s, _ = timed([*PORTING, "search", "--model", model, "--input", work / "v.en", "--reference",
                               work / "v.de", "--search", GRID, "--out", grid_dir, *(flags or [])], env)
            rows.append({"engine": name, "bulk_s": bulk_s, "grid_s": grid_s, "one_line_s": fixed_s,
                         "results": json.loads((grid_dir / "results.json").read_text())["results"]})
            print(f"  {name}: bulk {bulk_s:.1f} s, grid {grid_s:.1f} s, one line {fixed_s:.1f} s", file=sys.stderr)
    finally:
        stop_cluster(cluster_env)
    for r in rows[1:]:
        assert r["results"] == rows[0]["results"], f"{r['engine']}: the grid's results differ"
    signature = (f"cores:{cores}|torch:{torch.__version__}|threads:{torch.get_num_threads()}|ray:{ray.__version__}|"
                 f"python:{platform.python_version()}|model:{Path(model).name}|bulk:{args.bulk_lines}|"
                 f"grid:8x{args.grid_lines}")
    base = rows[0]
    print(f"\n{signature}\n")
    print(f"{'engine':<16} {'bulk s':>8} {'lines/s':>8} {'vs seq':>7} {'grid s':>8} {'vs seq':>7} {'1-line s':>9}")
    print("-" * 70)
    for r in rows:
        print(f"{r['engine']:<16} {r['bulk_s']:>8.1f} {args.bulk_lines / r['bulk_s']:>8.1f} "
              f"{base['bulk_s'] / r['bulk_s']:>6.2f}x {r['grid_s']:>8.1f} {base['grid_s'] / r['grid_s']:>6.2f}x "
              f"{r['one_line_s']:>9.1f}")
    print("\nvs seq > 1: faster than the sequential run. 1-line s: the same bulk command on one line, i.e. the "
          "fixed cost (process start, model load, and for Ray its start or join and the actors' model loads).")
    print("Every output equalled the sequential run's (bulk: bytes; grid: results.json).")
    (work / "engines.json").write_text(json.dumps({"signature": signature, "rows": [
        {k: v for k, v in r.items() if k != "results"} for r in rows]}, indent=1))
    print(f"\n(kept in {work}/engines.json)")
    shutil.rmtree(work / "ende-sep", ignore_errors=True)


if __name__ == "__main__":
    main()
