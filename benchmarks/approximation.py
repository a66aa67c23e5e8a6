"""What approximate ports cost on the shipped models: native bf16 and int8, CTranslate2 int8 and int16,
transformers fp16, each against fairseq's recorded run, through the parity harness (parity/approximation.py).

    .venv/bin/python benchmarks/approximation.py [--models ende-sep,ende-joined,m2m-en-fr,bart-man,mbart-enro]
        [--systems native-bf16,native-int8,ctranslate2-int8,ctranslate2-int8-avx2,ctranslate2-int16,transformers-fp16]
        [--settings beam5_nbest5,greedy] [--work .build/approximation] [--out .build/approximation/results.json]
        [--plot .build/approximation/sqnr.png]

Each (model, system) runs in its own process (its peak RSS is its own), on this CPU's own instruction
set (what users deploy), except ``ctranslate2-int8-avx2``: CTranslate2 int8 with oneDNN held to AVX2
(``ONEDNN_MAX_CPU_ISA=AVX2``), as on a CPU without AVX-512 VNNI. The recorded runs were made on AVX2:
replayed elsewhere, fairseq's float32 itself differs by ~1e-6, far below every budget.

Printed: one markdown row per (model, system): the least teacher-forced SQNR over the layer
boundaries (where the system exposes tensors), the per-token log-prob error (max / p99 / mean),
identical best hypotheses of the main setting, the metric port / original with the paired
bootstrap's p-value, the verdict under the declared budgets, and the row's conditions (kernels,
threads, ISA, versions). The plot: SQNR by depth on one model, one line per system and mode
(accumulated, and each layer's own error in shadow mode where the system can shadow).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# model -> (shipped model, checkpoint, recorded run, metric)
MODELS = {
    "ende-sep": ("ende-sep", "model2.pt", "ende-sep", "bleu"),
    "ende-joined": ("ende-joined", "model.pt", "ende-joined", "bleu"),
    "m2m-en-fr": ("m2m-enfres", "model.pt", "m2m-en-fr", "bleu"),
    "bart-man": ("bart-man", "model.pt", "bart-man", "rouge"),
    "mbart-enro": ("mbart-enro", "model.pt", "mbart-enro", "bleu"),
}
SYSTEMS = ("native-bf16", "native-int8", "ctranslate2-int8", "ctranslate2-int8-avx2", "ctranslate2-int16",
           "transformers-fp16")
AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def porting(*args: str) -> None:
    subprocess.run([str(ROOT / ".venv/bin/porting"), *args], check=True, stdout=subprocess.DEVNULL)


def prepare(model: str, work: Path) -> dict[str, Path]:
    """The converted model and its CTranslate2 int8 export, made once."""
    shipped, ckpt, _, _ = MODELS[model]
    src = ROOT / "reference_runs/models" / shipped
    out = work / shipped
    if not (out / "config.json").exists():
        porting("convert", "fairseq", "--checkpoint", str(src / ckpt), "--data-dir", str(src), "--out", str(out))
    dirs = {"native": out}
    for quantization in ("int8", "int16"):
        dirs[quantization] = ct2 = work / f"{shipped}-ct2-{quantization}"
        if not (ct2 / "model.bin").exists():
            porting("convert", "ctranslate2", "--model", str(out), "--out", str(ct2), "--quantization", quantization)
    return dirs


def spec(system: str, dirs: dict[str, Path]) -> tuple[str, dict]:
    return {"native-bf16": (f"native:{dirs['native']}", {"dtype": "bfloat16"}),
            # every product in int8 (on these small models `int8` alone quantizes none: quantize.gains)
            "native-int8": (f"native:{dirs['native']}", {"quantize": "int8-all"}),
            "ctranslate2-int8": (f"ctranslate2:{dirs['int8']}", {}),
            "ctranslate2-int8-avx2": (f"ctranslate2:{dirs['int8']}", {}),
            "ctranslate2-int16": (f"ctranslate2:{dirs['int16']}", {}),
            "transformers-fp16": (f"transformers:{dirs['native']}", {"dtype": "float16"})}[system]


def one(model: str, system: str, work: Path, settings: list[str]) -> dict:
    """One (model, system) through the harness, in this process."""
    import torch

    from parity import harness, machine
    from parity.systems import open_system
    from porting.evaluation.scoring import TUNING

    _, _, run, metric = MODELS[model]
    run_dir = ROOT / "reference_runs/runs" / run
    manifest = json.loads((run_dir.parent / "manifest.json").read_text())["runs"].get(run, {})
    langs = (manifest["source_lang"], manifest["target_lang"]) if manifest.get("source_lang") else None
    where, how = spec(system, prepare(model, work))
    s = open_system(where, langs=langs, **how)
    report = harness.compare(s, run_dir, settings, 1e-5, 1e-4, "accumulate", metric=TUNING[metric])
    main = report["scores"]["setting"] if report.get("scores") else settings[0]
    g = report["generation"][main]
    t = report["tensors"]
    return {"model": model, "system": system, "type": s.approximation, "ok": report["ok"],
            "approximation": report["approximation"], "setting": main,
            "identical": g["identical"], "total": g["total"], "causes": g["causes"], "outcome": g["outcome"],
            "settings_ok": {k: v["ok"] for k, v in report["generation"].items()},
            "tensors": t.get("tensors"), "own": t.get("own"),
            "conditions": {**machine.conditions({}), "threads": torch.get_num_threads(), "torch": torch.__version__,
                           "onednn_isa": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"),
                           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}}


NAMES = {"native-bf16": "native bf16", "native-int8": "native int8", "ctranslate2-int8": "CTranslate2 int8",
         "ctranslate2-int8-avx2": "CTranslate2 int8, AVX2 forced", "ctranslate2-int16": "CTranslate2 int16",
         "transformers-fp16": "transformers fp16"}


def verdict(r: dict) -> str:
    """PASS, or FAIL with each bound exceeded and each setting that fails."""
    if r["ok"]:
        return "PASS"
    b = r["approximation"]["budget"]
    d = r["approximation"]["log_probs"]
    beyond = [f"{k} {d[k]:.3g} > {b[bound]:g}" for k, bound in (("max", "token_max"), ("p99", "token_p99"))
              if d[k] > b[bound]]
    if r["tensors"] and (least := min(t["sqnr_db"] for t in r["tensors"])) < b["min_sqnr_db"]:
        beyond.append(f"SQNR {least:.1f} < {b['min_sqnr_db']:g} dB")
    failing = [("beam 5" if k == "beam5_nbest5" else k) for k, ok in r["settings_ok"].items() if not ok]
    return "FAIL: " + "; ".join(beyond + ([" and ".join(failing) + " fail" + "s" * (len(failing) == 1)] if failing else []))


def row(r: dict) -> str:
    d = r["approximation"]["log_probs"]
    sqnr = f"{min(x['sqnr_db'] for x in r['tensors']):.1f}" if r["tensors"] else "—"
    o = r["outcome"]
    score = f"{o['port']:.2f} / {o['original']:.2f} (p = {o['p_value']:.3f})" if o else "—"
    return (f"| {r['model']} | {NAMES[r['system']]} ({r['type']}) | {sqnr} | {d['max']:.3g} / {d['p99']:.2g} / "
            f"{d['mean']:.2g} | {r['identical']}/{r['total']} | {score} | {verdict(r)} |")


HEADER = ["| model | system (type) | least SQNR dB | Δ log-prob max / p99 / mean | identical (beam 5) | "
          "metric port / original | verdict under the declared budget |", "|---|---|---|---|---|---|---|"]


def plot(results: list[dict], model: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    names = None
    for r in results:
        if r["model"] != model or not r["tensors"]:
            continue
        names = [t["name"] for t in r["tensors"]]
        for key, style in (("tensors", "-"), ("own", ":")):
            if r.get(key):
                # a tensor the approximation leaves alone (int8's embeddings) is drawn at the top
                ax.plot(range(len(names)), [min(t["sqnr_db"], 95) for t in r[key]], style, marker="o", markersize=3,
                        label=f"{r['system']} ({'accumulated' if key == 'tensors' else 'own, shadow mode'})")
    if names is None:
        return
    from parity.approximation import BUDGETS

    for name, b in BUDGETS.items():
        if any(r["model"] == model and (r["type"] or "").split("_")[0] == name for r in results):
            ax.axhline(b.min_sqnr_db, color="#999", linestyle="--", linewidth=0.8)
            ax.annotate(f"{name} budget", (0, b.min_sqnr_db), fontsize=7, va="bottom")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("SQNR (dB), higher is closer")
    ax.set_ylim(bottom=0, top=100)
    ax.set_title(f"teacher-forced error by depth, {model} (worst sentence per boundary)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default=",".join(MODELS))
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--settings", default="beam5_nbest5,greedy")
    p.add_argument("--work", type=Path, default=ROOT / ".build/approximation")
    p.add_argument("--out", type=Path)
    p.add_argument("--plot", type=Path)
    p.add_argument("--plot-model", default="ende-sep")
    p.add_argument("--table", type=Path, help="print the table of a results.json again (no runs)")
    p.add_argument("--one", nargs=2, metavar=("MODEL", "SYSTEM"), help=argparse.SUPPRESS)
    args = p.parse_args()
    settings = args.settings.split(",")
    if args.table:
        print("\n".join(HEADER + [row(r) for r in json.loads(args.table.read_text())]))
        return
    if args.one:
        print(json.dumps(one(*args.one, args.work, settings)))
        return
    results = []
    print("\n".join(HEADER), flush=True)
    for model in args.models.split(","):
        prepare(model, args.work)
        for system in args.systems.split(","):
            env = {**os.environ, **(AVX2 if system.endswith("-avx2") else {})}
            done = subprocess.run([sys.executable, __file__, "--one", model, system, "--work", str(args.work),
                                   "--settings", args.settings], env=env, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"| {model} | {system} | error: {done.stderr.strip().splitlines()[-1]} |||||", flush=True)
                continue
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(row(results[-1]), flush=True)
    c = results[0]["conditions"] if results else {}
    print(f"\nconditions: {c.get('threads')} threads, torch {c.get('torch')}, {c.get('cpu_capability')}; settings "
          f"{args.settings}; budgets: parity/approximation.py")
    out = args.out or args.work / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1) + "\n")
    plot(results, args.plot_model, args.plot or args.work / "sqnr.png")


if __name__ == "__main__":
    main()
