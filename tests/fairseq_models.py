"""Real fairseq checkpoints of every architecture option, written by fairseq-train here.

Tiny (d=32) and briefly trained (so layer norms and biases have moved off their initial values),
on the shipped validation set, with the shipped ende-sep dictionaries and BPE codes. Built once per
machine into .build/test-models/ (keyed by the options), in a few seconds each.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from parity import shipped
from porting.files import read_lines

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".build" / "test-models"
BIN = Path(sys.executable).parent

COMMON = ["--arch", "transformer", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
          "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
          "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
          "--encoder-layers", "2", "--decoder-layers", "2",
          "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "fixed", "--max-update", "30",
          "--max-tokens", "1024", "--criterion", "cross_entropy", "--dropout", "0.1", "--seed", "3",
          "--cpu", "--num-workers", "0", "--no-progress-bar", "--no-epoch-checkpoints",
          "--disable-validation", "--source-lang", "en", "--target-lang", "de"]

# name -> extra fairseq-train options. Each turns on options that change the math.
VARIANTS = {
    "deep-shallow-untied": ["--encoder-layers", "4", "--decoder-layers", "1"],
    "prenorm": ["--encoder-normalize-before", "--decoder-normalize-before", "--share-decoder-input-output-embed"],
    "lnemb-noscale": ["--layernorm-embedding", "--no-scale-embedding", "--share-decoder-input-output-embed"],
    "learnedpos-gelu": ["--encoder-learned-pos", "--decoder-learned-pos", "--activation-fn", "gelu",
                        "--share-decoder-input-output-embed"],
}


def _env():
    return {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}  # fairseq's own loads only


def _data(work: Path) -> Path:
    """The shipped validation set, Moses-tokenized and BPE'd as the hub does, binarized with the
    shipped ende-sep dictionaries."""
    dest = work / "data"
    if (dest / "done").exists():
        return dest
    import fastBPE
    from sacremoses import MosesTokenizer

    model = shipped.catalog()["ende-sep"]
    text = work / "text"
    text.mkdir(parents=True, exist_ok=True)
    bpe = fastBPE.fastBPE(str(model.path / "bpecodes"))
    for lang in ("en", "de"):
        lines = read_lines(shipped.DATA / f"valid.{lang}")
        tok = MosesTokenizer(lang)
        moses = [tok.tokenize(line, aggressive_dash_splits=True, escape=True, return_str=True) for line in lines]
        (text / f"train.{lang}").write_text("\n".join(bpe.apply(moses)) + "\n", encoding="utf-8")
    subprocess.run([BIN / "fairseq-preprocess", "--source-lang", "en", "--target-lang", "de",
                    "--trainpref", text / "train", "--destdir", dest,
                    "--srcdict", model.path / "dict.en.txt", "--tgtdict", model.path / "dict.de.txt",
                    "--workers", "1"], check=True, env=_env(), capture_output=True)
    (dest / "done").write_text("")
    return dest


def build(name: str) -> Path:
    """A model directory in fairseq's release layout (model.pt, dict.en.txt, dict.de.txt, bpecodes)."""
    args = COMMON + VARIANTS[name]
    key = hashlib.sha256(json.dumps(args).encode()).hexdigest()[:12]
    out = CACHE / f"{name}-{key}"
    if (out / "model.pt").exists():
        return out
    data = _data(CACHE)
    save = CACHE / f".train-{name}-{key}"
    shutil.rmtree(save, ignore_errors=True)
    subprocess.run([BIN / "fairseq-train", data, "--save-dir", save, *args],
                   check=True, env=_env(), capture_output=True)
    model = shipped.catalog()["ende-sep"]
    tmp = CACHE / f".{name}-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy(save / "checkpoint_last.pt", tmp / "model.pt")
    for f in ("dict.en.txt", "dict.de.txt", "bpecodes"):
        shutil.copy(model.path / f, tmp / f)
    tmp.rename(out)
    shutil.rmtree(save, ignore_errors=True)
    return out
