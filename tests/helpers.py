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
    from porting_cli import main

    return main(["convert", "fairseq", *map(str, args)])


def namespace(**kw) -> argparse.Namespace:
    return argparse.Namespace(**kw)


def same_up_to_ties(ours, theirs, tol: float, other_hypotheses: bool = False) -> bool:
    """The fast kernels' n-best list against fairseq's (dicts with "tokens" and "score"): the same
    hypotheses, the best one first on both sides, and any other order difference only between
    hypotheses whose scores are within `tol` (a last-bit difference can order two hypotheses that
    fairseq scores exactly equal the other way). other_hypotheses: a lower place may also hold another
    hypothesis of a score within `tol` (the beam kept the other of two equals: on a machine that rounds
    otherwise than the recording's, porting/NOTES.md)."""
    toks = [h.tokens for h in ours]
    if ours[0].tokens != theirs[0]["tokens"] or len(ours) != len(theirs):
        return False
    if not other_hypotheses and sorted(toks) != sorted(t["tokens"] for t in theirs):
        return False
    return all(abs(h.score - t["score"]) < tol for h, t in zip(ours, theirs))


def interruptible() -> None:
    """A child's SIGINT back to its default (Popen's preexec_fn), for tests that interrupt it: run
    from a background job of a non-interactive shell (`make test &`), the suite and so its children
    inherit SIGINT ignored, and Python rightly keeps ignoring it."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
