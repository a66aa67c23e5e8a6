"""`porting parity`: a port against the original, with a report that points at the first divergence
and gives every differing hypothesis its cause.

    porting parity --original recorded:RUN_DIR | fairseq:DIR[:model1.pt,model2.pt] \
        --port [native:]OUT | transformers:HF_DIR | ctranslate2:CT2_DIR \
        [--input test.src --reference test.ref] [--atol 1e-5 --rtol 1e-4] [--mode accumulate|shadow] \
        [--kernels fast|portable|exact] [--dtype float32|bfloat16|float16] [--quantize int8|int8-all] \
        [--budget min_sqnr_db=20,token_max=1,token_p99=0.15] \
        [--settings beam5_nbest5,greedy] --report REPORT_DIR [--record] [--force]

Exit status 1 when parity fails (tensors beyond tolerance, a tokenization or hypothesis mismatch),
so it can gate CI. fairseq:… runs live fairseq on --input/--reference and compares against that run;
--record keeps it (as REPORT_DIR/original-run) to replay later without fairseq.

An approximate port (the native port in bfloat16 or int8, a transformers model in float16 or bfloat16,
a CTranslate2 model written with --quantization) is held to its type's budget
(parity/approximation.py: per-layer SQNR, per-token log-prob error, differences within it caused by
``approximation``, the metric not significantly worse) instead of identity.
"""
from __future__ import annotations

import gc
import sys
import tempfile
from pathlib import Path

from porting.kernels import QUANTIZE_MODES
from porting_cli.common import add_metric_flag, progress_bar


def add_arguments(p) -> None:
    p.add_argument("--original", required=True,
                   help="recorded:RUN_DIR, fairseq:MODEL_DIR[:a.pt:b.pt] (live; an ensemble as fairseq writes it, commas "
                        "work too) or transformers:DIR (an FSMT, M2M100, Bart or MBart model as the original, recorded now: no "
                        "fairseq needed)")
    p.add_argument("--port", required=True,
                   help="the system under test: native:OUT (our port; a bare OUT means the same), transformers:DIR "
                        "(an FSMT, M2M100, Bart or MBart model directory) or ctranslate2:DIR (a CTranslate2 model directory "
                        "written by `porting convert ctranslate2`, which carries the model's tokenizer)")
    p.add_argument("--source-lang", help="the direction of a multilingual port (any runtime); a recorded run's "
                                         "manifest names its own, and a bilingual model has one (given, it must "
                                         "be that one)")
    p.add_argument("--target-lang", help="see --source-lang")
    p.add_argument("--input", type=Path, help="source lines, for an original run now (fairseq:… or transformers:…); "
                                               "a recorded run holds its own")
    p.add_argument("--reference", type=Path, help="reference lines for --input; without them tensors are "
                   "teacher-forced on the original's own translations and the scores are skipped")
    p.add_argument("--atol", type=float, default=1e-5,
                   help="a tensor passes where |port - original| <= atol + rtol * |original|, element by element")
    p.add_argument("--rtol", type=float, default=1e-4, help="see --atol")
    p.add_argument("--mode", choices=("accumulate", "shadow"), default="accumulate",
                   help="accumulate: the port runs on its own; shadow: each port layer gets the original's input, "
                        "so a layer's own error is separated from the error it inherited (default: %(default)s)")
    p.add_argument("--kernels", choices=("fast", "portable", "exact"), default="fast",
                   help="the native port's decoding kernels (default: %(default)s, what `porting translate` uses)")
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="run the port in this type: the native port in bfloat16, a transformers model in float16 or "
                        "bfloat16 (an approximate port, held to the type's budget; default: %(default)s)")
    p.add_argument("--quantize", choices=("none", *QUANTIZE_MODES), default="none",
                   help="the native port with int8 linear layers, as `porting translate --quantize int8|int8-all` runs "
                        "it (an approximate port, held to int8's budget)")
    p.add_argument("--budget", help="an approximate port's bounds instead of its type's declared ones, e.g. "
                                    "min_sqnr_db=25,token_max=0.5,token_p99=0.1 (fields not given keep the declared "
                                    "value)")
    from parity.settings import SETTINGS

    p.add_argument("--settings", help=f"comma-separated generation settings, from: {', '.join(SETTINGS)} "
                                      "(default: all in the run)")
    p.add_argument("--report", "--out", dest="report", type=Path, required=True,
                   help="directory for report.json, report.md and report.html (--out: the same)")
    add_metric_flag(p, "test the outcome with (a setting fails when the port scores significantly below the "
                       "original)")
    p.add_argument("--record", action="store_true", help="keep the live fairseq run in the report directory")
    p.add_argument("--force", action="store_true", help="replace an existing report")


class UsageError(Exception):
    pass


def original_run(args, settings: list[str] | None, langs: tuple[str, str] | None) -> Path:
    """The original's side as a run directory: the recorded one, or live fairseq recorded now."""
    kind, _, where = args.original.partition(":")
    if kind not in ("recorded", "fairseq", "transformers") or not where:
        raise UsageError("--original must be recorded:RUN_DIR, fairseq:MODEL_DIR[:ckpts] or transformers:DIR")
    if kind == "recorded":
        if not (Path(where) / "inputs.json").exists():
            raise UsageError(f"{where}: not a recorded run (no inputs.json)")
        return Path(where)
    if kind == "transformers":
        return _record_transformers(args, where, settings, langs)
    from parity.fairseq_hub import fairseq_available
    from parity.record import record_live
    from parity.settings import SETTINGS

    source, reference = _inputs(args, settings, "fairseq")
    if not fairseq_available():
        raise UsageError("fairseq:… runs the original, and fairseq is not importable here: install it as the "
                         "README's set-up does (`make setup`), or compare against a recorded run (recorded:RUN_DIR) "
                         "or a transformers model (transformers:DIR)")
    target = _run_dir(args)
    return record_live(where, langs, source, reference, settings or list(SETTINGS), target)


def _inputs(args, settings: list[str] | None, original: str) -> tuple[list[str], list[str] | None]:
    from parity.settings import SETTINGS
    from porting.evaluation.scoring import DataError, read_parallel

    if not args.input:
        raise UsageError(f"{original}:… needs --input (and --reference for the scores)")
    if unknown := [s for s in settings or [] if s not in SETTINGS]:
        raise UsageError(f"--settings: unknown {', '.join(unknown)}; known: {', '.join(SETTINGS)}")
    try:
        return read_parallel(args.input, args.reference)
    except DataError as e:
        raise UsageError(str(e)) from None


def _run_dir(args) -> Path:
    return args.report / "original-run" if args.record else Path(tempfile.mkdtemp(prefix="parity-run-"))


def _record_transformers(args, where: str, settings: list[str] | None, langs: tuple[str, str] | None) -> Path:
    """A transformers model as the original: run now and recorded in the recorder's format."""
    from parity.contract import UnusableSystem
    from parity.peers import transformers_system
    from parity.record import record_system
    from parity.settings import SETTINGS

    source, reference = _inputs(args, settings, "transformers")
    try:
        original = transformers_system(Path(where), langs)
    except UnusableSystem as e:
        raise UsageError(f"--original {e}") from None
    return record_system(original, source, reference, settings or list(SETTINGS), _run_dir(args))


def _check_settings(settings: list[str] | None, run_dir: Path) -> None:
    """Every asked-for setting must be one the run holds: a misspelt name is a usage error, before
    any comparison runs, not a failed comparison after it."""
    available = sorted(p.stem for p in (run_dir / "generation").glob("*.json"))
    unknown = [s for s in settings or [] if s not in available]
    if unknown:
        raise UsageError(f"--settings: unknown {', '.join(unknown)}; this run has {', '.join(available)}")


def _recorded_languages(args) -> tuple[str, str] | None:
    """The direction a recorded run's manifest names (None: not a recorded run, or none named)."""
    import json

    kind, _, where = args.original.partition(":")
    manifest = Path(where).parent / "manifest.json"
    if kind != "recorded" or not manifest.is_file():
        return None
    run = json.loads(manifest.read_text(encoding="utf-8")).get("runs", {}).get(Path(where).name, {})
    return (run["source_lang"], run["target_lang"]) if run.get("source_lang") and run.get("target_lang") else None


def _budget_overrides(args) -> dict[str, float] | None:
    from parity.approximation import parse_overrides

    if args.budget is None:
        return None
    try:
        return parse_overrides(args.budget)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _budget(system, overrides: dict[str, float] | None):
    """The budget the system is held to (None: an exact port, held to identity)."""
    from parity.approximation import budget

    if system.approximation is None:
        if overrides:
            raise UsageError(f"--budget: {system.label} computes in float32, as the original: it is held to identity, "
                             "not to a budget (give --dtype or --quantize, or a quantized CTranslate2 model)")
        return None
    try:
        return budget(system.approximation, overrides)
    except KeyError as e:
        raise UsageError(e.args[0]) from None


def summary(report: dict) -> list[str]:
    from parity.report import score_line

    lines = [f"note: {report['conditions']['note']}"] if report["conditions"].get("note") else []
    t = report["tensors"]
    if "min_sqnr_db" in t:
        least = min(t["tensors"], key=lambda d: d["sqnr_db"])
        lines += [f"tensors: least SQNR {least['sqnr_db']:.1f} dB ({least['name']}); budget {t['min_sqnr_db']:g} dB"
                  + (f"; below it: {', '.join(t['failing'])}" if t["failing"] else "")]
    elif t.get("first_divergence"):
        lines += [f"tensors ({t['mode']}): first divergence at {t['first_divergence']}; "
                 f"beyond tolerance: {', '.join(t['failing'])}"]
    else:
        lines += [f"tensors: {t.get('skipped') or ', '.join(t['problems']) or 'all within tolerance'}"
                 + (f" (first inexact: {t['first_inexact']})" if t.get("first_inexact") else "")]
    if not report["decoder"]["ok"]:
        lines.append(f"decoder: {report['decoder']['problem']}")
    tok = report["tokenization"]
    lines.append(f"tokenization: {tok['skipped']}" if "skipped" in tok else
                 "tokenization: lines that differ of " + f"{tok['lines']}: "
                 + ", ".join(f"{stage} {n}" for stage, n in tok["counts"].items()))
    for name, g in report["generation"].items():
        if "error" in g:
            lines.append(f"generation {name}: {g['error']}")
            continue
        why = ", ".join(f"{cause} {n}" for cause, n in g["causes"].items() if n or cause == "unexplained")
        o = g["outcome"]
        worse = f"; {o['metric']} {o['port']} vs {o['original']}, significantly worse (p = {o['p_value']:.3f})" \
            if o and o["significantly_worse"] else ""
        lines.append(f"generation {name}: {g['identical']}/{g['total']} identical; differences: {why}{worse}")
    if a := report.get("approximation"):
        d = a["log_probs"]
        lines.append(f"approximation {a['type']}: " + (f"per-token |Δ log-prob| max {d['max']:.3g}, p99 {d['p99']:.3g}, "
                     f"mean {d['mean']:.2g} over {d['tokens']} tokens" if d else "no log-probs compared")
                     + ("; " + "; ".join(a["problems"]) if a["problems"] else "; within its budget"))
    if report["scores"]:
        b = report["scores"]
        lines.append(f"{b['metric']} ({b['setting']}, port / original): {score_line(b)}  ({b['port'][b['signature']]})")
    return lines


def run(args) -> int:
    from parity import harness, report
    from porting.evaluation.scoring import TUNING

    if (args.report / "report.json").exists() and not args.force:
        print(f"error: {args.report} already holds a report (pass --force to replace it)", file=sys.stderr)
        return 2
    from parity.contract import UnusableSystem
    from parity.systems import open_system, parse

    settings = args.settings.split(",") if args.settings else None
    try:
        given = [lang for lang in (args.source_lang, args.target_lang) if lang]
        if len(given) == 1:
            raise UsageError("--source-lang and --target-lang go together")
        recorded = _recorded_languages(args)
        overrides = _budget_overrides(args)
        if args.dtype == "float16" and parse(args.port)[0] == "native":
            raise UsageError("--dtype float16: the native port runs float32 or bfloat16 (float16 is for a transformers model)")
        # before fairseq is run for nothing
        system = open_system(args.port, args.kernels, tuple(given) or recorded, args.dtype, args.quantize)
        if system.kind != "native" and (args.mode == "shadow" or args.kernels != "fast"):
            raise UsageError(f"--mode shadow and --kernels apply to the native port, not to {system.kind}")
        budget = _budget(system, overrides)
        langs = system.langs
        live = not args.original.startswith("recorded:")
        if live:
            # the original runs now: the port, checked above, is let go and opened again after it, so
            # that the two models are never in memory together (peak memory: the larger, not the sum)
            del system
            gc.collect()
        run_dir = original_run(args, settings, langs)
        _check_settings(settings, run_dir)
        if live:
            system = open_system(args.port, args.kernels, langs, args.dtype, args.quantize)
    except UnusableSystem as e:
        print(f"error: --port {e}", file=sys.stderr)
        return 2
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with progress_bar(harness.generation_work(run_dir, settings, budget is not None), "decoding") as bar:
        result = harness.compare(system, run_dir, settings, args.atol, args.rtol, args.mode, bar.update,
                                 metric=TUNING[args.metric], budget=budget)
    result = {"original": args.original, "port": str(args.port), **result}
    report.write(result, args.report)
    print("\n".join(summary(result)))
    print(f"{'PASS' if result['ok'] else 'FAIL'}: report in {args.report}")
    return 0 if result["ok"] else 1
