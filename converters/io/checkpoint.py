"""Reading PyTorch pickles (fairseq checkpoints, pytorch_model.bin) as untrusted data.

A checkpoint is a pickle: unpickling it normally can run any code its author chose. We read with
torch's restricted unpickler (``weights_only=True``), widened by an explicit allowlist of the few
plain-data classes fairseq pickles. Anything else is refused before it is constructed.
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path

import torch

from converters.io.pickle_scan import globals_named, short_records

# Classes fairseq puts into its checkpoints besides tensors and builtin containers:
#   argparse.Namespace -- `args` (old checkpoints) and `cfg["model"]` (fairseq >= 0.10)
# numpy scalars are not included: fairseq's model state never needs them.
ALLOWED_GLOBALS = [argparse.Namespace]


class CheckpointError(Exception):
    """A checkpoint that cannot be read safely or is not what it claims to be."""


class UnsafeCheckpoint(CheckpointError):
    pass


def is_zip_checkpoint(path: Path) -> bool:
    """torch >= 1.6 writes a zip archive; older files are the legacy tar/pickle stream."""
    return zipfile.is_zipfile(path)


def load_untrusted(path: str | Path) -> dict:
    """Load a torch pickle without executing code from it.

    Zip-format files are memory-mapped: tensors that are never touched (an optimizer state of twice
    the model's size) are never read into memory.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    mmap = is_zip_checkpoint(path)
    if mmap:
        _check_storage_sizes(path)
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        raise _refusal(path, str(e)) from None
    except Exception as e:                       # noqa: BLE001 -- any failure to parse untrusted bytes means unreadable
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict at the top level, found {type(obj).__name__}")
    return obj


def _outside_allowlist(path: Path) -> list[str]:
    """Globals the file names that a fairseq checkpoint never does (read without building anything)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in ALLOWED_GLOBALS} | {"collections.OrderedDict", "_codecs.encode"}
    return [g for g in globals_named(path) if g not in allowed and not g.startswith("torch.")]


def _refusal(path: Path, message: str) -> CheckpointError:
    """torch's restricted unpickler said no: name the global the pickle asked for, or say that the
    bytes are no pickle at all (random bytes, a text file) rather than call them unsafe."""
    blocked = re.search(r"GLOBAL:? ?([\w.]+)", message)
    named = blocked.group(1) if blocked else next(iter(_outside_allowlist(path)), None)
    if named:
        return UnsafeCheckpoint(
            f"{path}: refused: the pickle asks to construct {named}, which is outside the allowlist. "
            "Checkpoints are untrusted data; only tensors, containers and argparse.Namespace are accepted. "
            "If you trust this file, convert it with the tool that wrote it instead.")
    if re.search(r"Unsupported operand|invalid load key|magic number|truncated|ran out of input", message, re.I):
        return CheckpointError(f"{path}: not a readable PyTorch checkpoint (its bytes are not a pickle torch writes)")
    detail = message.split("WeightsUnpickler error:", 1)[-1].strip().split("\n")[0][:200]
    return UnsafeCheckpoint(f"{path}: refused: the pickle asks for something outside the allowlist ({detail}). "
                            "Checkpoints are untrusted data; only tensors, containers and argparse.Namespace are accepted.")


def _check_storage_sizes(path: Path) -> None:
    """A mapped load trusts the sizes the pickle declares; a record cut short would be filled with
    the bytes after it (converters/io/pickle_scan.py). Refuse such a file before mapping it."""
    try:
        problems = short_records(path)
    except (ValueError, zipfile.BadZipFile, OSError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({e})") from None
    if problems:
        raise CheckpointError(f"{path}: truncated or corrupt: " + "; ".join(problems[:5])
                              + (f"; and {len(problems) - 5} more" if len(problems) > 5 else ""))


# what a weight may be stored as; anything else (complex, float8, integers) is no fairseq transformer weight
WEIGHT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def not_weights(state: dict, prefix: str = "model.") -> str | None:
    """Why a state dict (a fairseq checkpoint's `model`, names shown under `prefix`; or a transformers
    directory's weights) is not a transformer's weights, or None."""
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            return f"{prefix}{key} is a {type(value).__name__}, not a tensor"
        if value.dtype not in WEIGHT_DTYPES:
            return f"{prefix}{key} is {str(value.dtype).removeprefix('torch.')}, not a float weight"
    return None
