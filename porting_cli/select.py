"""`porting select`: which checkpoint is best, and does the ensemble of all beat it?

What the wmt19 porters did by hand (eval-each-checkpoint): convert each checkpoint (reusing a
conversion whose recorded source hash still matches), score each and the ensemble of all on one
split, report the table and the best.
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
    progress_bar,
    translate_lines,
)


def add_arguments(p) -> None:
    p.add_argument("--checkpoint", type=Path, action="append", required=True, help="fairseq checkpoint (repeat)")
    p.add_argument("--data-dir", type=Path, required=True, help="dict.*.txt and bpecodes")
    p.add_argument("--input", type=Path, required=True, help="the source lines every candidate translates")
    p.add_argument("--reference", type=Path, required=True, help="their references, line-aligned")
    p.add_argument("--out", type=Path, default=Path(".build") / "select",
                   help="where conversions are kept (default: %(default)s)")
    add_metric_flag(p, "rank the checkpoints by")
    add_generation_flags(p, nbest=False)
    add_direction_flags(p)
    add_engine_flags(p)


def converted(checkpoint: Path, data_dir: Path, out: Path) -> Path:
    from converters.fairseq.convert import convert
    from porting.files import sha256_file

    target = out / checkpoint.stem
    prov = target / "provenance.json"
    if prov.exists():
        recorded = json.loads(prov.read_text(encoding="utf-8"))
        member = recorded["members"]["model.safetensors"]
        data = {name: digest for name, digest in recorded["sources"].items() if name != member["checkpoint"]}
        if member["sha256"] == sha256_file(checkpoint) and all(
                (data_dir / name).is_file() and sha256_file(data_dir / name) == digest for name, digest in data.items()):
            return target  # reuse: converted from this very checkpoint and these very data files
    convert([checkpoint], data_dir, target, force=True)
    return target


def run(args) -> int:
    from converters.fairseq.convert import ConversionError
    from porting.engine import EngineError
    from porting.evaluation.scoring import TUNING, DataError, read_parallel

    names = [c.stem for c in args.checkpoint]
    problems = engine_problems(args) + ([f"checkpoint file names must differ, got {names}"]
                                        if len(set(names)) != len(names) else [])
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    try:
        source, reference = read_parallel(args.input, args.reference)
        dirs = []
        with progress_bar(len(args.checkpoint), "converting", unit="checkpoint") as bar:
            for checkpoint in args.checkpoint:
                dirs.append(converted(checkpoint, args.data_dir, args.out))
                bar.update(1)
    except (DataError, ConversionError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if problem := direction_problem(args, dirs[0]):
        print(f"error: {problem}", file=sys.stderr)
        return 1
    options = generation_options(args, dirs[0])
    metric = TUNING[args.metric]
    rows = []
    candidates = [(d.name, [d]) for d in dirs] + ([("ensemble of all", dirs)] if len(dirs) > 1 else [])
    for name, members in candidates:
        try:
            hyps = translate_lines(args, members, source, options, name)
        except (ValueError, EngineError) as e:
            print(f"error: {name}: {e}", file=sys.stderr)
            return 1
        rows.append((name, metric.score(hyps, reference)))
        print(f"{name}: {metric.label} {rows[-1][1][metric.rank[0]]:.2f}", file=sys.stderr)
    rows.sort(key=lambda r: metric.key(r[1]), reverse=True)      # stable: equals keep the candidates' order
    print(f"scored on {args.input} ({len(source)} lines); {rows[0][1][metric.signature]}\n")
    print(" | ".join([*metric.rank, "model"]) + "\n" + " | ".join("-" * max(4, len(c)) for c in [*metric.rank, "model"]))
    for name, record in rows:
        print(" | ".join([*(f"{record[c]:.2f}" for c in metric.rank), name]))
    print(f"\nbest: {rows[0][0]}")
    print(f"the conversions are in {args.out} (reused by a later run on the same checkpoints)")
    return 0
