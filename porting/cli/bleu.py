"""`porting bleu`: BLEU and chrF of the native port's translations (sacreBLEU, detokenized, signatures)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from porting.cli.common import add_generation_flags, generation_options, load_translator, runtime


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, action="append", required=True, help="converted model directory (repeat: ensemble)")
    p.add_argument("--input", type=Path, required=True)
    p.add_argument("--reference", type=Path, required=True)
    add_generation_flags(p, nbest=False)
    p.add_argument("--output", type=Path, help="also write the translations here")
    p.add_argument("--force", action="store_true", help="replace an existing --output")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")


def run(args) -> int:
    from tqdm import tqdm

    from porting.evaluation.scoring import DataError, read_parallel, score
    from porting.format import ConfigError

    if args.output is not None and args.output.exists() and not args.force:
        print(f"error: --output {args.output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    try:
        source, reference = read_parallel(args.input, args.reference)
        translator = load_translator(args)
        options = generation_options(args)
        with tqdm(total=len(source), desc="translating", unit="line", disable=None) as bar:
            hyps = translator.translate(source, batch_size=args.batch_size, progress=bar.update, **options)
    except (DataError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.output:
        args.output.write_text("".join(h + "\n" for h in hyps), encoding="utf-8")
        print(f"wrote the translations to {args.output}", file=sys.stderr)
    s = score(hyps, reference)
    if args.json:
        print(json.dumps({**s.to_dict(), "options": options, "runtime": runtime(args), "lines": len(source)}))
    else:
        print(f"BLEU {s.bleu:.2f}  ({s.bleu_signature})\nchrF {s.chrf:.2f}  ({s.chrf_signature})")
    return 0
