"""The user's text files and file fingerprints, one rule each for every command.

Lines: a file is split on "\\n" only, as `wc -l`, fairseq's preprocessing and `porting translate`
count lines (a final "\\n" ends the last line; a "\\r" before it is dropped). ``str.splitlines``
also splits on U+2028, U+2029, U+0085, "\\x0b", "\\x0c", "\\x1c"-"\\x1e" and a lone "\\r": one of
those inside a source line and another inside a reference line keep the two counts equal while
every later line pairs with the wrong one, which is why it is never used on user data here.

JSON lines: records are written with those separators escaped, so that a reader splitting with
``splitlines`` still sees one record a line.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

# characters str.splitlines() breaks on besides "\n" that json.dumps(ensure_ascii=False) leaves raw
_JSON_LINE_BREAKERS = {"\u2028": "\\u2028", "\u2029": "\\u2029", "\u0085": "\\u0085"}


def split_lines(text: str) -> list[str]:
    """Text -> lines on "\\n" only; no empty last line for a final newline; CRLF endings accepted."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_lines(path: str | Path) -> list[str]:
    """A UTF-8 text file's lines (``split_lines``)."""
    return split_lines(Path(path).read_text(encoding="utf-8"))


def json_line(record) -> str:
    """One JSON record on one line, however a reader splits lines (no trailing newline)."""
    text = json.dumps(record, ensure_ascii=False)
    for raw, escaped in _JSON_LINE_BREAKERS.items():
        text = text.replace(raw, escaped)              # only inside strings: JSON's own syntax never has them
    return text


def json_text(obj) -> str:
    """A JSON document as the converters write theirs: two-space indent, UTF-8 kept, a final newline."""
    return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def replace_text(path: str | Path, text: str) -> None:
    """Write a file of the workbench's own (a shard, a state record) whole or not at all: a
    temporary sibling renamed over it, so that a reader or a resumed run never sees half of it.
    (converters.io.atomic guards the user's outputs: locks, --force, inputs; this needs none.)"""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
