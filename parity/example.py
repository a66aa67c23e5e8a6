"""The README's main job on the shipped example model: translate a few test lines with fairseq
and print source, hypothesis and reference side by side."""
from __future__ import annotations

import sys

from parity import shipped


def add_arguments(p) -> None:
    p.add_argument("--model", default="ende-sep", help="a shipped example model (default: %(default)s)")
    p.add_argument("--lines", type=int, default=5, help="how many test lines (default: %(default)s)")
    p.add_argument("--beam", type=int, default=5)


def run(args) -> int:
    from parity.fairseq_hub import FairseqMissing, load_hub, translate_lines

    models = shipped.catalog()
    if args.model not in models:
        print(f"error: unknown model {args.model!r}; shipped: {', '.join(models)}", file=sys.stderr)
        return 2
    m = models[args.model]
    source, reference = shipped.test_set(m.source_lang, m.target_lang)
    source, reference = source[:args.lines], reference[:args.lines]
    try:
        hub = load_hub(m.path, m.default_checkpoint, m.source_lang, m.target_lang)
    except FairseqMissing as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"fairseq, {m.name}/{m.default_checkpoint}, beam {args.beam}, {m.source_lang}->{m.target_lang}\n")
    for src, hyp, ref in zip(source, translate_lines(hub, source, beam=args.beam), reference):
        print(f"source     {src}\nhypothesis {hyp}\nreference  {ref}\n")
    return 0
