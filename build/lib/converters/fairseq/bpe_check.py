"""Do these BPE codes belong to this dictionary?

One wmt19 release archive shipped another language pair's ``bpecodes``: everything loads, and the
model silently sees mostly ``<unk>``. A dictionary built from text segmented by the right codes
consists of pieces the codes can produce; we measure that share.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converters.fairseq.dictionary import Dictionary
from porting.files import read_lines
from porting.format import SPECIALS

MIN_PRODUCIBLE_SHARE = 0.95  # our own dictionaries score 1.00; the wrong codes score far lower


@dataclass
class BpeFit:
    checked: int
    producible: int
    examples: list[str]

    @property
    def share(self) -> float:
        return self.producible / self.checked if self.checked else 1.0


def read_merges(path: str | Path) -> list[tuple[str, str]]:
    """fastBPE codes: ``left right [count]`` per line, ``</w>`` marking a word end."""
    merges = []
    for lineno, line in enumerate(read_lines(path), 1):       # fastBPE reads lines up to "\n"
        parts = line.split()
        if not parts or line.startswith("#version"):
            continue
        if len(parts) not in (2, 3):
            raise ValueError(f"{path}:{lineno}: expected 'left right [count]', got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def producible_share(dictionary: Dictionary, merges: list[tuple[str, str]]) -> BpeFit:
    """Share of the dictionary's BPE pieces that are single characters or results of a merge.

    A non-final piece ``ab@@`` needs a merge producing ``ab``; a final piece ``ab`` one producing
    ``ab</w>``. fairseq's ``madeupwordNNNN`` padding entries and the specials are not pieces.
    """
    made = {left + right for left, right in merges}
    checked = producible = 0
    misses = []
    for symbol in dictionary.symbols:
        if symbol in SPECIALS or symbol.startswith("madeupword"):
            continue
        core, final = (symbol[:-2], False) if symbol.endswith("@@") else (symbol, True)
        unit = core + "</w>" if final else core
        checked += 1
        if len(core) == 1 or unit in made:
            producible += 1
        elif len(misses) < 5:
            misses.append(symbol)
    return BpeFit(checked, producible, misses)
