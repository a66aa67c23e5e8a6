"""``porting convert transformers``: a transformers directory read back as the fairseq model it was
made from, by the reader of its model_type (FSMT: converters/fairseq/fsmt.py; M2M100:
converters/fairseq/m2m100.py; Bart: converters/fairseq/bart.py;
MBart: converters/fairseq/mbart.py), then written by the same phases as ``convert fairseq``."""
from __future__ import annotations

import json
from pathlib import Path

from converters.fairseq.bart import read_bart
from converters.fairseq.convert import ConversionError, finish
from converters.fairseq.fsmt import read_fsmt
from converters.fairseq.m2m100 import read_m2m100
from converters.fairseq.mbart import read_mbart

READERS = {"fsmt": read_fsmt, "m2m_100": read_m2m100, "bart": read_bart, "mbart": read_mbart}


def read_config(hf_dir: Path) -> dict:
    """config.json of a transformers directory, or one line saying why it is not one."""
    path = hf_dir / "config.json"
    if not hf_dir.is_dir() or not path.is_file():
        raise ConversionError([f"--model {hf_dir}: not a transformers directory (no config.json)"])
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConversionError([f"--model {path}: not readable JSON ({e})"]) from None
    if not isinstance(config, dict):
        raise ConversionError([f"--model {path}: not a JSON object"])
    return config


def convert_transformers(hf_dir: Path, out: Path, force: bool = False, license: str | None = None) -> dict:
    """Convert, or raise ConversionError listing every problem; returns the provenance record."""
    hf_dir = Path(hf_dir)
    config = read_config(hf_dir)
    model_type = config.get("model_type")
    reader = READERS.get(model_type) if isinstance(model_type, str) else None
    if reader is None:
        raise ConversionError([f"--model {hf_dir}: a {config.get('model_type')!r} model; this reads "
                               f"{', '.join(repr(k) for k in READERS)} (FSMT, M2M100, Bart and MBart)"])
    return finish(reader(hf_dir, out, config, force, license))
