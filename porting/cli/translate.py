"""`porting translate`: source lines in, translations out, with the native port (no fairseq).

Every input line gives exactly one output line (or one JSON object), in order. Input is read as
UTF-8; invalid bytes are replaced (and reported), control characters other than tab are removed
(and reported), so that no line is lost or merged.

A file (``--input``, or standard input redirected from one) is read whole, checked whole, and
translated in length-sorted batches. A pipe, a terminal or a fifo is translated as lines arrive,
as fairseq-interactive does with ``--buffer-size``: whatever has arrived (up to ``--buffer-size``
lines) is translated together and written at once, so a line typed or sent alone comes back
without waiting for the end of the input, and a fast producer still fills whole batches.
"""
from __future__ import annotations

import os
import select
import stat
import sys
import unicodedata
from collections.abc import Iterator
from pathlib import Path

from porting.cli.common import add_generation_flags, generation_options, load_translator, positive_int, progress_bar


def add_arguments(p) -> None:
    p.add_argument("--model", type=Path, action="append", required=True,
                   help="converted model directory; repeat for an ensemble (each contributes all its members)")
    p.add_argument("--input", type=Path, help="source file (default: standard input)")
    add_generation_flags(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text",
                   help="text: the best translation a line; jsonl: a record a line (source ids, n-best, scores)")
    p.add_argument("--buffer-size", type=positive_int, default=1024,
                   help="from a pipe or terminal: at most this many lines that have arrived are translated together "
                        "(fairseq-interactive's --buffer-size); files are read whole")
    p.add_argument("--long-input", choices=["error", "truncate"], default="error",
                   help="a line longer than the model's maximum positions: fail (default) or cut it")
    p.add_argument("--normalize-punctuation", action="store_true",
                   help="Moses punctuation normalisation before tokenizing (off, as in fairseq's hub)")


def clean_line(chunk: bytes, n: int) -> tuple[str, list[str]]:
    """One line's bytes -> its text, never dropping or merging it; returns (text, warnings)."""
    warnings = []
    try:
        line = chunk.decode("utf-8")
    except UnicodeDecodeError:
        line = chunk.decode("utf-8", errors="replace")
        warnings.append(f"line {n}: invalid UTF-8 replaced by U+FFFD")
    line = line.removesuffix("\r")
    kept = "".join(c for c in line if c == "\t" or unicodedata.category(c) != "Cc")
    if kept != line:
        warnings.append(f"line {n}: control characters removed")
    return kept, warnings


def clean_lines(raw: bytes, first: int = 1) -> tuple[list[str], list[str]]:
    """Bytes -> lines (split on \\n only), numbered from `first`; returns (lines, warnings)."""
    chunks = raw.split(b"\n")
    if chunks and chunks[-1] == b"":
        chunks.pop()
    lines, warnings = [], []
    for n, chunk in enumerate(chunks, first):
        line, w = clean_line(chunk, n)
        lines.append(line)
        warnings += w
    return lines, warnings


def arriving(fd: int, buffer_size: int) -> Iterator[list[bytes]]:
    """Lines from a stream as they arrive: blocks only while it holds no complete line, then takes
    whatever else is ready at once (up to buffer_size lines) and yields it. A last line without
    its newline still counts, as in the file path."""
    pending, lines, eof = b"", [], False
    while not (eof and not lines):
        if not eof and (not lines or select.select([fd], [], [], 0)[0]):
            data = os.read(fd, 1 << 16)                  # blocks only when there is nothing to translate
            if data:
                *complete, pending = (pending + data).split(b"\n")
                lines += complete
            else:
                eof = True
                if pending:
                    lines.append(pending)
            if lines and len(lines) < buffer_size and not eof:
                continue                                 # take what else is ready before translating
        if lines:
            yield lines[:buffer_size]
            lines = lines[buffer_size:]


def is_file(fd: int) -> bool:
    return stat.S_ISREG(os.fstat(fd).st_mode)


def run(args) -> int:
    from porting.format import ConfigError

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
    if args.input is not None or is_file(sys.stdin.fileno()):
        try:
            raw = args.input.read_bytes() if args.input else sys.stdin.buffer.read()
        except OSError as e:
            print(f"error: --input {args.input or 'standard input'}: {e.strerror}", file=sys.stderr)
            return 1
        lines, warnings = clean_lines(raw)
        return _translate(translator, lines, warnings, args, options, total=len(lines))
    first = 1
    for chunk in arriving(sys.stdin.fileno(), args.buffer_size):
        cleaned = [clean_line(line, n) for n, line in enumerate(chunk, first)]
        first += len(chunk)
        lines, warnings = [text for text, _ in cleaned], [w for _, ws in cleaned for w in ws]
        if (rc := _translate(translator, lines, warnings, args, options)) != 0:
            return rc
    return 0


def _translate(translator, lines: list[str], warnings: list[str], args, options: dict, total: int = 0) -> int:
    """Translate these lines and write their results, flushed; a bar on a terminal for a whole file."""
    from porting.files import json_line
    from porting.translator import InputError

    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    try:
        with progress_bar(total, "translating") as bar:
            results = translator.generate(lines, batch_size=args.batch_size, truncate=args.long_input == "truncate",
                                          progress=bar.update, **options)
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
