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


def catalog() -> dict[str, ShippedModel]:
    entries = json.loads((MODELS / "catalog.json").read_text())
    return {name: ShippedModel(name, MODELS / name, e["source_lang"], e["target_lang"],
                               tuple(e["checkpoints"]), e["default_checkpoint"])
            for name, e in entries.items()}


def test_set(source_lang: str = "en", target_lang: str = "de", split: str = "test") -> tuple[list[str], list[str]]:
    return read_lines(DATA / f"{split}.{source_lang}"), read_lines(DATA / f"{split}.{target_lang}")
