"""`porting search`: BLEU (or ROUGE-L, `-m rouge`) over a grid of generation settings, tuned on one
split and reported on another.

    porting search --model OUT --input valid.en --reference valid.de \
        --search "beam=5:8:11:15 lenpen=0.6:0.7:0.8:0.9:1.0:1.1 early_stopping=true:false" \
        [--test-input test.en --test-reference test.de] [--write-best] [--jobs N | --engine ray [--ray-address A]]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from porting_cli.common import (
    add_direction_flags,
    add_engine_flags,
    add_generation_flags,
    add_metric_flag,
    direction_problem,
    engine_problems,
    generation_options,
    open_engine,
    progress_bar,
    runtime,
    text_options,
)


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, action="append", required=True, help="converted model directory (repeat: ensemble)")
    p.add_argument("--input", type=Path, required=True, help="tuning source (a validation split)")
    p.add_argument("--reference", type=Path, required=True, help="the tuning split's references, line-aligned")
    p.add_argument("--search", required=True, help='e.g. "beam=5:8 lenpen=0.6:1.0 early_stopping=true:false"')
    p.add_argument("--test-input", type=Path, help="re-score the best setting on this split (never tuned on)")
    p.add_argument("--test-reference", type=Path, help="the references of --test-input")
    add_metric_flag(p, "tune on")
    p.add_argument("--write-best", action="store_true",
                   help="write the best setting into the first model's generation_config.json")
    p.add_argument("--out", type=Path, help="results directory (default: .build/search/<model>); holds the resumable state")
    p.add_argument("--restart", action="store_true",
                   help="discard the finished settings of an earlier run (needs --force: it deletes them)")
    p.add_argument("--force", action="store_true", help="allow --restart and --write-best to replace what exists, and a "
                   "search to replace another search's results in --out")
    add_generation_flags(p, nbest=False)
    add_direction_flags(p)
    add_engine_flags(p, shards_help="cut the tuning source into this many shards, each a task per setting "
                                    "(default: one per worker)")


def run(args) -> int:

    from porting.engine import EngineError
    from porting.engine.shards import plan_lines, run_sharded
    from porting.evaluation.grid import GridError, markdown_table, parse_grid, run_grid
    from porting.evaluation.scoring import SIGNIFICANCE, TUNING, DataError, read_parallel
    from porting.format import ConfigError

    problems = engine_problems(args)
    try:
        settings = parse_grid(args.search)
    except GridError as e:
        problems.append(str(e))
    if (args.test_input is None) != (args.test_reference is None):
        problems.append("--test-input and --test-reference go together")
    try:
        source, reference = read_parallel(args.input, args.reference)
        test = read_parallel(args.test_input, args.test_reference) if args.test_input and args.test_reference else None
    except DataError as e:
        problems.append(str(e))
    try:
        base = generation_options(args)
    except (ValueError, ConfigError) as e:
        problems.append(str(e))
    if problem := direction_problem(args, args.model[0]):
        problems.append(problem)
    if args.restart and not args.force:
        problems.append("--restart deletes the finished settings of an earlier run: add --force")
    if args.write_best and not args.force:
        problems.append(f"--write-best replaces {args.model[0] / 'generation_config.json'}: add --force")
    if problems:
        print("error: " + "\n".join(problems), file=sys.stderr)
        return 1
    metric = TUNING[args.metric]
    keys = list(settings[0])
    defaults = {k: base.get(k) for k in keys}
    out = args.out or Path(".build") / "search" / args.model[0].resolve().name
    state = out / "state.jsonl"
    identity = search_identity(args)
    if (other := _other_search(out, identity)) and not args.force:
        print(f"error: {out} holds the results of another search ({other}): choose another --out, or add --force "
              "to replace its results.json and table.md", file=sys.stderr)
        return 1
    print(f"results in {out} (the finished settings kept in {state}: an interrupted search resumes)", file=sys.stderr)
    if args.restart and state.exists():
        state.unlink()
    try:
        with open_engine(args, text=text_options(args)) as engine:
            # one bar in lines (settings x source lines), so that it moves inside a setting too
            with progress_bar(len(settings) * len(source), f"{len(settings)} settings") as bar:
                records = run_grid(args.model, source, reference, settings, base, state, engine,
                                   args.shards or engine.workers, bar.update, runtime(args), metric=metric)
            best = metric.best(records)
            if test:              # the best setting and the defaults on the split never tuned on
                shards = plan_lines(args.model[0], test[0], args.batch_size, args.shards or engine.workers,
                                    text=text_options(args))
                tuned = [t.texts[0] for t in run_sharded(engine, test[0], shards, {**base, **best["setting"]},
                                                         reuse_encoder=True)]
                default = [t.texts[0] for t in run_sharded(engine, test[0], shards, base, reuse_encoder=True)]
    except (ValueError, ConfigError, EngineError) as e:   # a setting the model cannot take (min_len above the cap, ...)
        print(f"error: {e}", file=sys.stderr)
        return 1
    table = markdown_table(records, keys, defaults, metric)
    report = {**identity, "fixed": base,
              "runtime": runtime(args), "results": records, "best": best["setting"],
              f"best_{metric.rank[0]}": best[metric.rank[0]], "signature": best[metric.signature]}
    print(f"tuned on {args.input} ({len(source)} lines); {best[metric.signature]}\n")
    print(table)
    if test:
        sig = metric.paired(default, tuned, test[1])
        report["test"] = {"split": str(args.test_input), "best": metric.score(tuned, test[1]),
                          "defaults": metric.score(default, test[1]), "paired_bootstrap": sig}
        print(f"\nreported on {args.test_input} ({len(test[0])} lines, never tuned on): best setting {metric.label} "
              f"{sig['system_score']:.2f} vs current defaults {sig['baseline_score']:.2f}, paired bootstrap "
              f"p = {sig['p_value']:.4f} ({sig['signature']})")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "table.md").write_text(table + "\n")
    print(f"\nwrote {out / 'results.json'} and {out / 'table.md'}")
    if args.write_best:
        if not test or report["test"]["paired_bootstrap"]["p_value"] >= SIGNIFICANCE:
            why = (f"p = {report['test']['paired_bootstrap']['p_value']:.4f} on {args.test_input}" if test
                   else "no --test-input to test it on")
            print(f"warning: the best setting is not shown better than the current defaults ({why}); "
                  "writing it as --force asks", file=sys.stderr)
        write_best(args.model[0], best["setting"])
        print(f"\nwrote {best['setting']} into {args.model[0] / 'generation_config.json'}")
    return 0


def search_identity(args) -> dict:
    """What makes two searches the same one (their results may replace each other's)."""
    return {"models": [str(m) for m in args.model], "tuned_on": str(args.input), "grid": args.search,
            "metric": args.metric, "tested_on": str(args.test_input) if args.test_input else None}


def _other_search(out: Path, identity: dict) -> str | None:
    """What differs, where out's results.json is another search's (None: none there, or this one's)."""
    try:
        earlier = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None if not (out / "results.json").exists() else "an unreadable results.json"
    differ = [f"{k} {earlier.get(k)!r}" for k, v in identity.items() if earlier.get(k) != v]
    return ", ".join(differ) or None


def write_best(model_dir: Path, setting: dict) -> None:
    """Into the fairseq section and transformers' equivalents (the converter's one mapping), written as
    transformers writes it, atomically (the file keeps normal permissions: the umask's); an FSMT
    config.json's own generation fields follow (card.FSMT_GENERATION_FIELDS), so the two files agree."""
    from converters.fairseq import card
    from converters.io.atomic import write_file_atomic
    from porting.generation.options import fairseq_defaults

    path = model_dir / "generation_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config.pop("transformers_version", None)
    config["fairseq"] = {**fairseq_defaults(), **config.get("fairseq", {}), **setting}
    for optional in ("num_return_sequences", "no_repeat_ngram_size"):     # present only when they apply
        config.pop(optional, None)
    settings = card.transformers_generation(config["fairseq"])["settings"]
    config.update(settings)
    model_config_path = model_dir / "config.json"
    model_config = card.with_generation(json.loads(model_config_path.read_text(encoding="utf-8")), settings)
    if model_config is not None:
        model_text = card.as_transformers_writes(model_config["model_type"], model_config)
        write_file_atomic(model_config_path, lambda tmp: tmp.write_text(model_text, encoding="utf-8"), force=True)
    text = card.as_transformers_writes("generation", config)
    write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"), force=True)
