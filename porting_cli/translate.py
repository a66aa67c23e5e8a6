"""`porting translate`: source lines in, translations out, with the native port (no fairseq).

Every input line gives exactly one output line (or one JSON object), in order. Input is read as
UTF-8; invalid bytes are replaced (and reported), control characters other than tab are removed
(and reported), so that no line is lost or merged.

A file (``--input``, or standard input redirected from one) is read whole, checked whole, and
translated in length-sorted batches. A pipe, a terminal or a fifo is translated as lines arrive,
as fairseq-interactive does with ``--buffer-size``: whatever has arrived (up to ``--buffer-size``
lines) is translated together and written at once, so a line typed or sent alone comes back
without waiting for the end of the input, and a fast producer still fills whole batches.

With ``--out FILE`` the input is a bulk job: cut into shards (porting.engine.shards) that run on
the engine chosen (``--engine local`` with ``--jobs``, or ``--engine ray``), each shard's output
kept in ``FILE.shards/`` as it finishes, and the file written whole, in input order, at the end:
the same bytes as the standard output of a single-process run. An interrupted job is finished
by the same command with ``--resume``.
"""
from __future__ import annotations

import os
import select
import stat
import sys
import unicodedata
from collections.abc import Iterator
from functools import partial
from pathlib import Path

from porting_cli.common import (
    add_direction_flags,
    add_engine_flags,
    add_generation_flags,
    direction_problem,
    engine_problems,
    generation_options,
    load_translator,
    open_engine,
    positive_int,
    progress_bar,
    runtime,
    text_options,
)


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
    add_direction_flags(p)
    p.add_argument("--out", "--output", dest="output", type=Path,
                   help="bulk mode: write the translations of --input to this file, whole, in input order; "
                        "finished shards are kept in OUT.shards/ until then")
    add_engine_flags(p, shards_help="with --out: cut the input into this many shards (default: one per 32 batches, "
                                    "at least one per worker); an interrupted job loses at most the shards running")
    p.add_argument("--resume", action="store_true",
                   help="with --out: finish an interrupted job, reusing the shards it finished")
    p.add_argument("--force", action="store_true", help="with --out: replace an existing file, start the shards afresh")


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


def usage_problems(args) -> list[str]:
    problems = engine_problems(args)
    if args.output is None:
        given = [flag for flag, value in (("--engine ray", args.engine == "ray"), ("--jobs", args.jobs != 1),
                                          ("--shards", args.shards), ("--resume", args.resume), ("--force", args.force))
                 if value]
        if given:
            problems.append(f"{', '.join(given)}: only with --out (bulk translation of a file)")
    elif args.input is None and not is_file(sys.stdin.fileno()):
        problems.append("--out translates a file: give --input (a pipe is translated as it arrives, to standard output)")
    return problems


def run(args) -> int:
    from porting.format import ConfigError

    if problems := usage_problems(args):
        print("\n".join(f"error: {p}" for p in problems), file=sys.stderr)
        return 2
    if args.input is not None and not args.input.is_file():
        print(f"error: --input {args.input}: {'a directory' if args.input.is_dir() else 'no such file'}", file=sys.stderr)
        return 1
    if problem := direction_problem(args, args.model[0]):
        print(f"error: {problem}", file=sys.stderr)
        return 1
    if args.output is not None:
        return bulk(args)
    try:
        translator = load_translator(args, lean=True, **text_options(args))
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
    from porting.translation import InputError

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
    langs = (translator.tokenizer.source_lang, translator.tokenizer.target_lang)
    for r in results:
        if r.truncated:
            print(f"warning: a line was truncated to {translator.max_source_positions} tokens", file=sys.stderr)
        out.write(render(r, args.format, langs) + "\n")
    out.flush()
    return 0


def render(r, fmt: str, langs: tuple[str, str]) -> str:
    """One Translation as its output line: the best text, or a JSON record (naming the direction)."""
    from porting.files import json_line

    if fmt == "text":
        return r.texts[0]
    return json_line({"source_lang": langs[0], "target_lang": langs[1],
                      "source": r.source, "source_ids": r.source_ids, "truncated": r.truncated,
                      "hypotheses": [{"tokens": h.tokens, "text": t, "score": h.score,
                                      "positional_scores": h.positional_scores}
                                     for h, t in zip(r.hypotheses, r.texts)]})


def bulk(args) -> int:
    """--out: the input's shards on the engine, kept as they finish, the file written whole at the end."""
    from converters.io.atomic import OutputExists, write_file_atomic
    from porting.engine import EngineError
    from porting.engine.shards import StoreError
    from porting.format import ConfigError

    if args.output.exists() and not args.force:                 # refused before any work
        print(f"error: --out {args.output} exists; pass --force to replace it", file=sys.stderr)
        return 1
    store_dir = args.output.with_name(args.output.name + ".shards")
    try:
        lines, lengths, options, langs = _bulk_input(args)
        with open_engine(args, truncate=args.long_input == "truncate",
                         text=text_options(args)) as engine:
            store = _open_store(args, store_dir, engine, lines, lengths, options)
            with progress_bar(len(lines), f"{len(store.plan)} shards") as bar:
                outputs = store.run(engine, lines, options, partial(render, fmt=args.format, langs=langs), bar.update)
        write_file_atomic(args.output, lambda tmp: tmp.write_text("".join(o + "\n" for o in outputs), encoding="utf-8"),
                          force=args.force, inputs=[p for p in (args.input,) if p])
    except (StoreError, OutputExists, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except EngineError as e:
        print(f"error: {e}\n{_kept(store_dir)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {_kept(store_dir)}", file=sys.stderr)
        return 130
    store.remove()
    shards = len(store.plan)
    print(f"wrote {len(lines)} translations to {args.output} ({shards} shard{'s' * (shards != 1)} on the "
          f"{args.engine} engine)", file=sys.stderr)
    return 0


def _bulk_input(args) -> tuple[list[str], list[int], dict, tuple[str, str]]:
    """The input's lines, their lengths as the Translator encodes them, the options and the
    direction; every problem of the input raised as one ValueError before any work starts (warnings
    printed)."""
    from porting.translator import SourceEncoder

    options = generation_options(args)
    if options.get("nbest", 1) > 1 and args.format == "text":
        raise ValueError(f"--nbest {options['nbest']} needs --format jsonl (text prints one translation a line)")
    try:
        raw = args.input.read_bytes() if args.input else sys.stdin.buffer.read()
    except OSError as e:
        raise ValueError(f"--input {args.input or 'standard input'}: {e.strerror}") from None
    lines, warnings = clean_lines(raw)
    encoder = SourceEncoder.of(args.model[0], **text_options(args))
    encoded = encoder.encode_all(lines, args.long_input == "truncate")
    for w in warnings + [f"line {n}: truncated to {len(ids)} tokens" for n, (ids, cut) in enumerate(encoded, 1) if cut]:
        print(f"warning: {w}", file=sys.stderr)
    langs = (encoder.tokenizer.source_lang, encoder.tokenizer.target_lang)
    return lines, [len(ids) for ids, _ in encoded], options, langs


def _open_store(args, store_dir: Path, engine, lines: list[str], lengths: list[int], options: dict):
    """The job's shard store: new, or with --resume the one an interrupted run of it left."""
    from porting.engine.shards import ShardStore, fingerprint, plan

    # what the kept shards belong to: the models' files, the input, and everything that shapes an output line
    job = fingerprint(args.model, lines, options, {"batch_size": args.batch_size, "format": args.format,
                                                   "truncate": args.long_input == "truncate",
                                                   "text": text_options(args), "runtime": runtime(args)})
    # default: a shard per 32 batches (an interrupt loses little), and at least one per worker
    wanted = args.shards or max(engine.workers, -(-len(lines) // (32 * args.batch_size)))
    store = ShardStore.open(store_dir, job, plan(lengths, args.batch_size, wanted), args.resume, args.force,
                            warn=lambda message: print(f"warning: {message}", file=sys.stderr))
    if kept := len(store.done()):
        print(f"resuming: {kept} of {len(store.plan)} shards were finished", file=sys.stderr)
    return store


def _kept(store_dir: Path) -> str:
    """What an unfinished job leaves, and how to finish it."""
    from porting.engine.shards import ShardStore

    if (counts := ShardStore.kept(store_dir)) is None:
        return "nothing was kept"
    return (f"{counts[0]} of {counts[1]} shards finished are kept in {store_dir}; run the same command with --resume "
            "to finish")
