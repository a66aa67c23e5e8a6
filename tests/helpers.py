"""Small helpers shared by tests."""
from __future__ import annotations

import argparse
from pathlib import Path

import torch

from parity import shipped


def trusted_load(path: Path) -> dict:
    """Tests read checkpoints fairseq wrote here, in this repository: trusted, so a full unpickle."""
    return torch.load(path, map_location="cpu", weights_only=False)


def model_dir(name: str) -> Path:
    return shipped.catalog()[name].path


def convert_cli(*args: str) -> int:
    from porting.cli import main

    return main(["convert", "fairseq", *map(str, args)])


def namespace(**kw) -> argparse.Namespace:
    return argparse.Namespace(**kw)
