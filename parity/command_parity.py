"""`porting parity`: the port against the original, with a report that points at the first divergence.

    porting parity --original recorded:RUN_DIR | fairseq:DIR[:model1.pt,model2.pt] --port OUT \
        [--input test.src --reference test.ref] [--atol 1e-5 --rtol 1e-4] [--mode accumulate|shadow] \
        [--kernels fast|exact] \
        [--settings beam5_nbest5,greedy] --report REPORT_DIR [--record] [--force]

Exit status 1 when parity fails (tensors beyond tolerance, a tokenization or hypothesis mismatch),
so it can gate CI. fairseq:… runs live fairseq on --input/--reference and compares against that run;
--record keeps it (as REPORT_DIR/original-run) to replay later without fairseq.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from parity import names


def add_arguments(p) -> None:
    p.add_argument("--original", required=True, help="recorded:RUN_DIR or fairseq:MODEL_DIR[:ckpt1.pt,ckpt2.pt]")
    p.add_argument("--port", type=Path, required=True, help="converted model directory")
    p.add_argument("--input", type=Path, help="source lines (live fairseq only)")
    p.add_argument("--reference", type=Path, help="reference lines (live fairseq only; without them tensors are "
                   "teacher-forced on the original's own translations and BLEU is skipped)")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--mode", choices=("accumulate", "shadow"), default="accumulate",
                   help="accumulate: the port runs on its own; shadow: each port layer gets the original's input, "
                        "so a layer's own error is separated from the error it inherited (default: %(default)s)")
    p.add_argument("--kernels", choices=("fast", "exact"), default="fast",
                   help="the port's decoding kernels (default: %(default)s, what `porting translate` uses)")
    p.add_argument("--settings", help="comma-separated generation settings (default: all in the run)")
    p.add_argument("--report", type=Path, required=True, help="directory for report.json, report.md and report.html")
    p.add_argument("--record", action="store_true", help="keep the live fairseq run in the report directory")
    p.add_argument("--force", action="store_true", help="replace an existing report")


def live_run(spec: str, port: Path, source: list[str], reference: list[str] | None, settings: list[str], out: Path) -> Path:
    from parity.fairseq_hub import load_hub
    from parity.record import record_hub

    model_dir, _, ckpts = spec.partition(":")
    config = json.loads((port / "config.json").read_text())
    src, tgt = config["langs"]
    hub = load_hub(model_dir, ckpts.split(",") if ckpts else "model.pt", src, tgt)
    record_hub(hub, tgt, settings, len(ckpts.split(",")) <= 1, out, source, reference, label="fairseq")
    return out


def markdown(report: dict) -> str:
    lines = [f"# Parity report: {report['port']} vs {report['original']}", "",
             f"**{'PASS' if report['ok'] else 'FAIL'}**", ""]
    t = report["tensors"]
    if "tensors" in t:
        lines += ["## Tensors (teacher-forced, worst sentence)", "",
                  f"mode {t['mode']}; first divergence: **{t['first_divergence'] or 'none'}** "
                  f"(atol {t['atol']}, rtol {t['rtol']}); beyond tolerance: {', '.join(t['failing']) or 'none'}; "
                  f"first tensor that differs at all: {t['first_inexact'] or 'none (bitwise equal)'}", "",
                  "| tensor | shape | max abs | mean abs | max rel | NMSE | atol needed | ok |", "|---|---|---|---|---|---|---|---|"]
        lines += [f"| {d['name']} | {d['shape']} | {d['max_abs']:.3g} | {d['mean_abs']:.3g} | {d['max_rel']:.3g} | "
                  f"{d['nmse']:.3g} | {d['atol_needed']:.3g} | {'✓' if d['ok'] else '✗'} |" for d in t["tensors"]]
        lines += [f"- {p}" for p in t["problems"]]
        lines += ["", "### Where each tensor is taken", ""] + names.markdown_table([names.Boundary(**b) for b in t["correspondence"]])
    else:
        lines += ["## Tensors", "", t.get("skipped", "")]
    tok = report["tokenization"]
    lines += ["", "## Tokenization", "", f"{tok['lines']} lines; mismatches: {tok['counts']}"]
    lines += ["", "## Generation", "", "| setting | identical | max score diff |", "|---|---|---|"]
    for name, g in report["generation"].items():
        if "error" in g:
            lines.append(f"| {name} | {g['error']} | |")
        else:
            lines.append(f"| {name} | {g['identical']}/{g['lines']} | {g['max_score_diff']:.3g} |")
    for name, g in report["generation"].items():
        for m in g.get("mismatches", [])[:10]:
            a = m["at_that_step"]
            lines += ["", f"- {name}, line {m['line']}: parts at step {m['first_differing_step']}: port chose "
                      f"`{a['port_token']}` ({a['port_token_logprob']:.4f}), original `{a['original_token']}` "
                      f"({a['original_token_logprob']:.4f})", f"  - source: {m['source']}",
                      f"  - port: {m['port']} ({m['port_score']:.4f})", f"  - original: {m['original']} ({m['original_score']:.4f})"]
    if report.get("bleu"):
        b = report["bleu"]
        lines += ["", "## BLEU", "", f"setting {b['setting']}: port {b['port']['bleu']} / original {b['original']['bleu']} "
                  f"(chrF {b['port']['chrf']} / {b['original']['chrf']}); paired bootstrap p = {b['paired_bootstrap'].get('note') or b['paired_bootstrap']['p_value']}",
                  f"`{b['port']['bleu_signature']}`"]
    return "\n".join(lines) + "\n"


def run(args) -> int:
    from parity import harness

    kind, _, where = args.original.partition(":")
    if (args.report / "report.json").exists() and not args.force:
        print(f"error: {args.report} already holds a report (pass --force to replace it)", file=sys.stderr)
        return 2
    settings = args.settings.split(",") if args.settings else None
    if kind not in ("recorded", "fairseq") or not where:
        print("error: --original must be recorded:RUN_DIR or fairseq:MODEL_DIR[:ckpts]", file=sys.stderr)
        return 2
    if kind == "fairseq":
        from parity.settings import SETTINGS
        from porting.evaluate import DataError, read_parallel

        if not args.input:
            print("error: fairseq:… needs --input (and --reference for BLEU)", file=sys.stderr)
            return 2
        try:
            source, reference = read_parallel(args.input, args.reference)
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        target = args.report / "original-run" if args.record else Path(tempfile.mkdtemp(prefix="parity-run-"))
        run_dir = live_run(where, args.port, source, reference, settings or list(SETTINGS), target)
    else:
        run_dir = Path(where)
        if not (run_dir / "inputs.json").exists():
            print(f"error: {run_dir}: not a recorded run (no inputs.json)", file=sys.stderr)
            return 2
    manifest = run_dir.parent / "manifest.json"
    if manifest.exists():  # reproduce the recording's float reductions: same thread count
        import torch

        torch.set_num_threads(json.loads(manifest.read_text()).get("threads", torch.get_num_threads()))
    report = {"original": args.original, "port": str(args.port),
              "tensors": harness.tensors(args.port, run_dir, args.atol, args.rtol, args.mode),
              "tokenization": harness.tokenization(args.port, run_dir),
              "generation": harness.generation(args.port, run_dir, settings, kernels=args.kernels)}
    main_setting = next((s for s in ("beam5_nbest5", "greedy") if s in report["generation"]), None)
    report["bleu"] = harness.bleu(report["generation"], run_dir, main_setting) if main_setting else None
    for g in report["generation"].values():
        g.pop("port_texts", None)
    report["ok"] = (report["tensors"].get("ok", True) and report["tokenization"]["ok"]
                    and all(g.get("ok", False) for g in report["generation"].values()))
    args.report.mkdir(parents=True, exist_ok=True)
    (args.report / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
    (args.report / "report.md").write_text(markdown(report), encoding="utf-8")
    from parity.html_report import render

    (args.report / "report.html").write_text(render(report), encoding="utf-8")
    t = report["tensors"]
    if t.get("first_divergence"):
        print(f"tensors ({t['mode']}): first divergence at {t['first_divergence']}; beyond tolerance: {', '.join(t['failing'])}")
    else:
        print(f"tensors: {t.get('skipped') or ', '.join(t['problems']) or 'all within tolerance'}"
              + (f" (first inexact: {t['first_inexact']})" if t.get("first_inexact") else ""))
    print(f"tokenization: {report['tokenization']['counts']} mismatches over {report['tokenization']['lines']} lines")
    for name, g in report["generation"].items():
        print(f"generation {name}: " + (g["error"] if "error" in g else f"{g['identical']}/{g['lines']} identical"))
    if report["bleu"]:
        b = report["bleu"]
        print(f"BLEU ({b['setting']}): port {b['port']['bleu']} / original {b['original']['bleu']}  ({b['port']['bleu_signature']})")
    print(f"{'PASS' if report['ok'] else 'FAIL'}: report in {args.report}")
    return 0 if report["ok"] else 1
