"""The example models shipped under reference_runs/ and their held-out data.

``reference_runs`` sits beside this package both in a checkout and in an installed wheel (where its
models and data are package data), so the same path serves both; the recorded runs exist only in a
checkout (``in_checkout``)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from porting.files import read_lines

REFERENCE_RUNS = Path(__file__).resolve().parents[1] / "reference_runs"
MODELS = REFERENCE_RUNS / "models"
DATA = REFERENCE_RUNS / "data"
RUNS = REFERENCE_RUNS / "runs"


def in_checkout() -> bool:
    """Whether this is a source checkout (with the recorded runs), not an installed wheel."""
    return (REFERENCE_RUNS.parent / "pyproject.toml").is_file() and RUNS.is_dir()


@dataclass(frozen=True)
class ShippedModel:
    name: str
    path: Path
    source_lang: str
    target_lang: str
    checkpoints: tuple[str, ...]
    default_checkpoint: str
    directions: tuple[str, ...] = ()      # a multilingual model's trained directions ("en-fr", ...)

    @property
    def multilingual(self) -> bool:
        return bool(self.directions)


def catalog() -> dict[str, ShippedModel]:
    """The shipped models; a multilingual one's source_lang/target_lang are its default direction."""
    entries = json.loads((MODELS / "catalog.json").read_text())
    return {name: ShippedModel(name, MODELS / name, e["source_lang"], e["target_lang"],
                               tuple(e["checkpoints"]), e["default_checkpoint"], tuple(e.get("directions", ())))
            for name, e in entries.items()}


def test_set_files(source_lang: str = "en", target_lang: str = "de", split: str = "test") -> tuple[Path, Path]:
    """The held-out files of a direction: ``test.en``/``test.de`` (the bilingual models' data) or a
    language pair's ``test.en-fr.en``/``test.en-fr.fr``, read either way round."""
    for pair in (f"{source_lang}-{target_lang}", f"{target_lang}-{source_lang}"):
        files = DATA / f"{split}.{pair}.{source_lang}", DATA / f"{split}.{pair}.{target_lang}"
        if all(f.is_file() for f in files):
            return files
    return DATA / f"{split}.{source_lang}", DATA / f"{split}.{target_lang}"


def test_set(source_lang: str = "en", target_lang: str = "de", split: str = "test") -> tuple[list[str], list[str]]:
    source, reference = test_set_files(source_lang, target_lang, split)
    return read_lines(source), read_lines(reference)
