"""fairseq's ``dict.<lang>.txt`` read as fairseq's ``Dictionary.load`` reads it, without fairseq.

Ids are not line numbers: ``<s>``=0 ``<pad>``=1 ``</s>``=2 ``<unk>``=3 come first, then one entry
per line (``symbol count`` with an optional ``#fairseq:overwrite`` flag). A symbol seen twice is an
error unless flagged; a flagged one gets a new id and shadows the old one, as in fairseq.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from porting.format import SPECIALS

OVERWRITE = "#fairseq:overwrite"


class DictionaryError(Exception):
    pass


@dataclass
class Dictionary:
    symbols: list[str]                       # id -> symbol
    indices: dict[str, int]                  # symbol -> id (the last one, for overwritten symbols)
    counts: list[int]
    shadowed: list[tuple[str, int]] = field(default_factory=list)  # (symbol, id no longer reachable by name)

    def __len__(self) -> int:
        return len(self.symbols)


def read_dictionary(path: str | Path) -> Dictionary:
    path = Path(path)
    symbols, counts = list(SPECIALS), [1] * len(SPECIALS)
    indices = {s: i for i, s in enumerate(SPECIALS)}
    shadowed, problems = [], []
    # fairseq reads the file with readlines() in text mode: lines end at "\n", "\r\n" or "\r" only
    # (str.splitlines would also split symbols holding U+2028, U+0085, ...)
    with open(path, encoding="utf-8") as f:
        raws = [raw.rstrip("\n") for raw in f.readlines()]
    for lineno, raw in enumerate(raws, 1):
        line = raw.rstrip()
        overwrite = line.endswith(" " + OVERWRITE)
        if overwrite:
            line = line[: -len(OVERWRITE) - 1]
        word, sep, count = line.rpartition(" ")
        if not sep or not word:
            problems.append(f"{path}:{lineno}: expected '<symbol> <count> [{OVERWRITE}]', got {raw!r}")
            continue
        try:
            n = int(count)
        except ValueError:
            problems.append(f"{path}:{lineno}: count {count!r} is not an integer")
            continue
        if word in indices and not overwrite:
            problems.append(f"{path}:{lineno}: duplicate symbol {word!r} (fairseq needs {OVERWRITE} for that)")
            continue
        if word in indices:
            shadowed.append((word, indices[word]))
        indices[word] = len(symbols)
        symbols.append(word)
        counts.append(n)
    if problems:
        raise DictionaryError("\n".join(problems))
    return Dictionary(symbols, indices, counts, shadowed)


def to_fsmt_vocab(d: Dictionary) -> dict[str, int]:
    """The vocabulary in transformers' FSMT style: fastBPE marks non-final pieces with ``@@``, FSMT
    marks final pieces with ``</w>`` instead (``Mach@@`` -> ``Mach``, ``ine`` -> ``ine</w>``);
    special symbols are kept as they are. Ids are fairseq's."""
    vocab: dict[str, int] = {}
    for symbol, i in d.indices.items():
        if symbol in SPECIALS:
            key = symbol
        elif symbol.endswith("@@"):
            key = symbol[:-2]
        else:
            key = symbol + "</w>"
        if key in vocab:
            raise DictionaryError(f"symbols {d.symbols[vocab[key]]!r} and {symbol!r} both become {key!r} in FSMT's style")
        vocab[key] = i
    return vocab
