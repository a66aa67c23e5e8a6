"""The example models shipped under reference_runs/ and their held-out data."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from porting.files import read_lines

REFERENCE_RUNS = Path(__file__).resolve().parents[1] / "reference_runs"
MODELS = REFERENCE_RUNS / "models"
DATA = REFERENCE_RUNS / "data"
RUNS = REFERENCE_RUNS / "runs"


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
