"""One conversion's state, shared by every family's reader and by the phases that write it
(converters/fairseq/convert.py, converters/fairseq/families/): what was asked, what has been gathered,
and every problem found."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from converters.fairseq.arch import Architecture
from converters.fairseq.dictionary import Dictionary
from converters.fairseq.multilingual import MultilingualTask
from porting.format import BILINGUAL, LanguageTokens
from porting.generation.options import fairseq_defaults


class ConversionError(Exception):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s), nothing written:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass
class Member:
    """One checkpoint, mapped: our tensor name -> tensor, plus what was dropped or tied, and why."""
    path: Path
    sha256: str
    arch: Architecture
    args: dict
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    tied: dict[str, str] = field(default_factory=dict)
    upgrades: list[tuple[str, str]] = field(default_factory=list)
    langs: tuple[str | None, str | None] = (None, None)
    task: dict = field(default_factory=dict)


@dataclass
class Job:
    """One conversion: what was asked, what has been gathered so far, and every problem found."""
    checkpoints: list[Path]
    data_dir: Path
    out: Path
    source_lang: str | None
    target_lang: str | None
    dtype: str
    force: bool
    license: str | None = None
    origin: str = "fairseq checkpoints"          # what was read, for the provenance
    data_files: list[Path] = field(default_factory=list)     # sources besides the members, hashed
    generation: dict = field(default_factory=fairseq_defaults)   # fairseq's options the output defaults to
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    members: list[Member] = field(default_factory=list)
    dicts: dict[str, Dictionary] = field(default_factory=dict)
    dict_names: dict[str, str] = field(default_factory=dict)   # side -> the file its symbols came from
    vocabs: dict[str, dict[str, int]] = field(default_factory=dict)
    merges: list[tuple[str, str]] | None = None
    family: str = BILINGUAL                        # porting.format's name; converters/fairseq/families runs it
    dict_file: Path | None = None                  # --dict (the multilingual family's one dictionary)
    sentencepiece: Path | None = None              # --sentencepiece, then the model found
    task: MultilingualTask | None = None   # set for translation_multi_simple_epoch checkpoints
    lang_tokens: LanguageTokens | None = None
    lang_tok_style: str | None = None              # --lang-tok-style: overrides the checkpoint's
    gpt2: dict = field(default_factory=dict)       # the BART family's encoder.json / vocab.bpe, read
    mbart_langs: tuple[str, ...] = ()              # the mBART family's --langs: a [xx_YY] token each

    @property
    def sides(self) -> tuple[tuple[str, str | None], ...]:
        return ("src", self.source_lang), ("tgt", self.target_lang)

    def dict_name(self, side: str) -> str:
        """The dictionary file a side's symbols come from, as messages name it (its family's gather names them)."""
        return self.dict_names.get(side, "the dictionary")
