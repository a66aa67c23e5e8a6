"""`porting bleu`: score the port's translations, or an existing hypothesis file, with sacreBLEU,
and summaries with ROUGE (``-m rouge``).

Scores, signatures and the JSON are sacreBLEU's own (its metric objects and its formatting), so a
number printed here is the number ``sacrebleu REF -i HYP`` prints with the same options. ROUGE is
rouge-score's F1 averaged over lines (porting.evaluation.scoring.Rouge), printed the same way.
"""
from __future__ import annotations

import sys
from pathlib import Path

from porting_cli.common import (
    add_direction_flags,
    add_engine_flags,
    add_generation_flags,
    direction_problem,
    engine_problems,
    generation_options,
    non_negative_int,
    positive_int,
    runtime,
    translate_lines,
    translation_flags,
)


def add_arguments(p) -> None:
    from porting.evaluation.scoring import METRICS

    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", type=Path, action="append",
                      help="converted model directory to translate --input with (repeat: ensemble)")
    what.add_argument("--hypotheses", type=Path, help="score this file of translations instead (one line per reference line)")
    p.add_argument("--input", type=Path, help="source text to translate (with --model)")
    p.add_argument("--reference", type=Path, nargs="+", required=True,
                   help="reference file(s), line-aligned; several for multi-reference BLEU (sacreBLEU's REFS)")
    p.add_argument("--metrics", "-m", nargs="+", choices=[*METRICS, "rouge"], default=["bleu", "chrf"],
                   help="sacreBLEU's -m, and rouge: ROUGE-1/2/L/Lsum F1 from rouge-score, Porter-stemmed, averaged "
                        "over lines (for summaries)")
    p.add_argument("--tokenize", "-tok", choices=_tokenizers(), default=None,
                   help="BLEU's tokenizer, sacreBLEU's --tokenize (default: sacreBLEU's, 13a)")
    p.add_argument("--lowercase", "-lc", action="store_true", help="case-insensitive scores (sacreBLEU's --lowercase)")
    p.add_argument("--width", "-w", type=non_negative_int, default=2,
                   help="decimals printed (sacreBLEU's default is 1; 2 matches the search and select reports)")
    p.add_argument("--confidence", "-ci", action="store_true",
                   help="bootstrap confidence intervals (sacreBLEU's --confidence)")
    p.add_argument("--confidence-n", "-cin", type=positive_int, default=1000, help="bootstrap resamples for --confidence")
    p.add_argument("--json", action="store_true", help="print sacreBLEU's JSON (a list when several metrics)")
    add_generation_flags(p, nbest=False)
    add_direction_flags(p)
    add_engine_flags(p)
    p.add_argument("--out", "--output", dest="output", type=Path,
                   help="also write the translations to this file (with --model; --output: the same)")
    p.add_argument("--force", action="store_true", help="replace an existing --output")


def _tokenizers() -> list[str]:
    # sacreBLEU's own table of BLEU tokenizers (mecab/spm ones need their extra packages at scoring time)
    from sacrebleu.metrics import BLEU

    return list(BLEU.TOKENIZERS)


def usage_problems(args) -> list[str]:
    """Options that would be ignored, or that are missing, for the mode chosen."""
    problems = []
    if args.model and args.input is None:
        problems.append("--model translates --input: give --input")
    if args.hypotheses is not None:
        ignored = [flag for flag in translation_flags(args) if flag] + \
                  [f"--{flag}" for n, flag in (("input", "input"), ("output", "out"), ("ray_address", "ray-address"),
                                               ("shards", "shards"), ("source_lang", "source-lang"),
                                               ("target_lang", "target-lang")) if getattr(args, n) is not None] + \
                  [flag for flag, given in (("--engine ray", args.engine == "ray"), ("--jobs", args.jobs != 1)) if given]
        if ignored:
            problems.append(f"{', '.join(ignored)}: only apply when translating (--model), not to --hypotheses")
    if "rouge" in args.metrics and args.confidence:
        problems.append("--confidence is sacreBLEU's bootstrap for its metrics; -m rouge has no confidence interval here")
    if set(args.metrics) == {"rouge"}:
        problems += [f"{flag}: only sacreBLEU's metrics take it, not -m rouge"
                     for flag, given in (("--tokenize", args.tokenize), ("--lowercase", args.lowercase)) if given]
    if args.confidence_n != 1000 and not args.confidence:
        problems.append("--confidence-n sets --confidence's resamples: add --confidence")
    return problems + engine_problems(args)


def run(args) -> int:
    from converters.io.atomic import OutputExists
    from porting.engine import EngineError
    from porting.evaluation.scoring import DataError, Rouge, read_aligned, sacrebleu_metrics, sacrebleu_results
    from porting.format import ConfigError

    problems = usage_problems(args)
    if problems:
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    if args.model and (problem := direction_problem(args, args.model[0])):
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.output is not None and args.output.exists() and not args.force:   # refused before translating
        print(f"error: --out {args.output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    files = {"input" if args.model else "hypotheses": args.input if args.model else args.hypotheses}
    files.update({f"reference {i + 1}" if len(args.reference) > 1 else "reference": r for i, r in enumerate(args.reference)})
    try:
        texts = read_aligned(files)
        metrics = sacrebleu_metrics([m for m in args.metrics if m != "rouge"], args.tokenize, args.lowercase)
        hyps = _translate(args, texts["input"]) if args.model else texts["hypotheses"]
    except (DataError, ConfigError, ValueError, OutputExists, EngineError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    references = [lines for name, lines in texts.items() if name.startswith("reference")]
    results = sacrebleu_results(hyps, references, metrics, args.width, args.confidence_n if args.confidence else None,
                                as_json=args.json)
    if "rouge" in args.metrics:
        results += Rouge().format(hyps, references, args.width, as_json=args.json)
    print(("[\n" + ",\n".join(results) + "\n]") if args.json and len(results) > 1 else "\n".join(results))
    return 0


def _translate(args, source: list[str]) -> list[str]:
    options = generation_options(args)
    hyps = translate_lines(args, args.model, source, options, "translating")
    print(f"translated {len(source)} lines with {options} on {runtime(args)}", file=sys.stderr)
    if args.output:
        from converters.io.atomic import write_file_atomic
        write_file_atomic(args.output, lambda tmp: tmp.write_text("".join(h + "\n" for h in hyps), encoding="utf-8"),
                          force=args.force, inputs=[args.input, *args.reference])
        print(f"wrote the translations to {args.output}", file=sys.stderr)
    return hyps
