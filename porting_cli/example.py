"""The README's main job on the shipped example model: convert it, translate a few test lines with
the native port, and show fairseq's own translation beside each (when fairseq is installed)."""
from __future__ import annotations

import sys
from pathlib import Path

from porting_cli.common import positive_int, progress_bar


def add_arguments(p) -> None:
    p.add_argument("--model", default="ende-sep", help="a shipped example model (ende-sep, ende-joined, the "
                                                       "multilingual m2m-enfres, or the BART summarizer bart-man)")
    p.add_argument("--source-lang", help="a multilingual model's direction (default: its first trained one)")
    p.add_argument("--target-lang", help="see --source-lang")
    p.add_argument("--lines", type=positive_int, default=5, help="how many test lines")
    p.add_argument("--beam", type=positive_int, default=5, help="beam size, for the port and for fairseq")
    p.add_argument("--out", type=Path, default=Path("porting-example"),
                   help="where the converted model goes (OUT/MODEL), relative to the current directory; "
                        "a previous example's output there is replaced, anything else is refused")


def run(args) -> int:
    from converters.fairseq.convert import ConversionError, convert
    from parity import shipped
    from parity.fairseq_hub import FairseqMissing, fairseq_available, load_hub, translate_lines
    from porting.translator import Translator

    models = shipped.catalog()
    if args.model not in models:
        print(f"error: unknown model {args.model!r}; shipped: {', '.join(models)}", file=sys.stderr)
        return 2
    m = models[args.model]
    src, tgt = args.source_lang or m.source_lang, args.target_lang or m.target_lang
    if f"{src}-{tgt}" not in (m.directions or (f"{m.source_lang}-{m.target_lang}",)):
        print(f"error: {args.model} ships test data for {', '.join(m.directions or [m.source_lang + '-' + m.target_lang])}"
              f", not {src}-{tgt}", file=sys.stderr)
        return 2
    source, reference = shipped.test_set(src, tgt)
    source, reference = source[:args.lines], reference[:args.lines]

    out = args.out / m.name
    print(f"1. convert {m.path / m.default_checkpoint} -> {out}", flush=True)
    try:
        # force replaces only a converted directory of ours (converters/io/atomic.py): a rerun
        # refreshes the previous example, and never anything the user put there
        convert([m.path / m.default_checkpoint], m.path, out, force=True)
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"2. translate {len(source)} {src}-{tgt} test lines with the native port (beam {args.beam})", flush=True)
    with progress_bar(len(source), "port") as bar:
        ours = Translator.from_pretrained(out, source_lang=src, target_lang=tgt).translate(
            source, beam=args.beam, progress=bar.update)
    theirs = None
    if fairseq_available():
        print("3. the same lines with fairseq, the original (loading it takes a few seconds)", flush=True)
        try:
            theirs = translate_lines(load_hub(m.path, m.default_checkpoint, src, tgt), source, beam=args.beam)
        except FairseqMissing as e:
            print(f"   (skipped: {e})")
    print()
    for i, (src, hyp, ref) in enumerate(zip(source, ours, reference)):
        print(f"source     {src}\nport       {hyp}")
        if theirs is not None:
            print(f"fairseq    {theirs[i]}{'' if theirs[i] == hyp else '   <-- DIFFERS'}")
        print(f"reference  {ref}\n")
    if theirs is not None:
        same = sum(a == b for a, b in zip(ours, theirs))
        print(f"port and fairseq agree on {same} of {len(ours)} lines")
        return 0 if same == len(ours) else 1
    return 0
