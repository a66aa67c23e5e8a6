"""`porting translate`: source lines in, translations out, with the native port (no fairseq).

Every input line gives exactly one output line (or one JSON object), in order. Input is read as
UTF-8; invalid bytes are replaced (and reported), control characters other than tab are removed
(and reported), so that no line is lost or merged.
"""
from __future__ import annotations

import sys
import unicodedata
from pathlib import Path

from porting.cli.common import add_generation_flags, generation_options, load_translator


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="converted model directory; repeat for an ensemble (each contributes all its members)")
    p.add_argument("--input", type=Path, help="source file (default: standard input)")
    add_generation_flags(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    p.add_argument("--long-input", choices=["error", "truncate"], default="error",
                   help="a line longer than the model's maximum positions: fail (default) or cut it")
    p.add_argument("--normalize-punctuation", action="store_true",
                   help="Moses punctuation normalisation before tokenizing (off, as in fairseq's hub)")


def clean_lines(raw: bytes) -> tuple[list[str], list[str]]:
    """Bytes -> lines, never dropping or merging a line; returns (lines, warnings)."""
    warnings = []
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    out = []
    for n, chunk in enumerate(chunks, 1):
        try:
            line = chunk.decode("utf-8")
        except UnicodeDecodeError:
            line = chunk.decode("utf-8", errors="replace")
            warnings.append(f"line {n}: invalid UTF-8 replaced by U+FFFD")
        line = line.removesuffix("\r")
        kept = "".join(c for c in line if c == "\t" or unicodedata.category(c) != "Cc")
        if kept != line:
            warnings.append(f"line {n}: control characters removed")
        out.append(kept)
    return out, warnings


def run(args) -> int:
    from porting.files import json_line
    from porting.format import ConfigError
    from porting.translator import InputError

    if args.input is not None and not args.input.is_file():
        print(f"error: --input {args.input}: {'a directory' if args.input.is_dir() else 'no such file'}", file=sys.stderr)
        return 1
    try:
        translator = load_translator(args, normalize_punctuation=args.normalize_punctuation)
        options = generation_options(args)
    except (ConfigError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.format == "text" and options.get("nbest", 1) > 1:
        # one line out per line in: an n-best list needs records (fairseq-interactive's H- lines are
        # not a format other tools read back)
        print(f"error: --nbest {options['nbest']} needs --format jsonl (text prints one translation a line)",
              file=sys.stderr)
        return 1
    try:
        raw = args.input.read_bytes() if args.input else sys.stdin.buffer.read()
    except OSError as e:
        print(f"error: --input {args.input}: {e.strerror}", file=sys.stderr)
        return 1
    lines, warnings = clean_lines(raw)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        results = translator.generate(lines, batch_size=args.batch_size,
                                      truncate=args.long_input == "truncate", **options)
    except (InputError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    out = sys.stdout
    for r in results:
        if r.truncated:
            print(f"warning: a line was truncated to {translator.max_source_positions} tokens", file=sys.stderr)
        if args.format == "text":
            out.write(r.texts[0] + "\n")
        else:
            out.write(json_line({
                "source": r.source, "source_ids": r.source_ids, "truncated": r.truncated,
                "hypotheses": [{"tokens": h.tokens, "text": t, "score": h.score,
                                "positional_scores": h.positional_scores}
                               for h, t in zip(r.hypotheses, r.texts)]}) + "\n")
    out.flush()
    return 0
