"""Rebuild the shipped example models end to end, the way FAIR built the wmt19 systems.

    python reference_runs/tools/build.py [--work DIR] [--only corpus,bpe,...]

Stages (each skipped when its output exists in the work directory, so a re-run resumes):
  corpus     Debian gettext catalogs -> raw parallel text, split train/valid/test
  tokenize   Moses (sacremoses): punctuation normalisation, aggressive dash splits, escaping
  bpe        fastBPE's C++ tool learns joint codes; they are applied to every split
  preprocess fairseq-preprocess: separate dictionaries (wmt19 en-ru layout) and a joined one (en-de layout)
  train      fairseq-train on the CPU: model A (separate dicts, shared decoder in/out embeddings,
             two epochs kept as an ensemble) and model B (joined dict, all embeddings shared, 4+2 layers)
  export     fairseq's release layout under reference_runs/models/, test/valid sets under reference_runs/data/
  bleu       sacreBLEU of each model on the shipped test set, through fairseq's hub interface

The example models are small on purpose: trained in minutes on 2 CPU cores, shipped at <= ~30 MB each.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
import corpus  # noqa: E402  (sibling module of this script)

SRC, TGT = "en", "de"
N_TEST, N_VALID = 500, 500
BPE_MERGES = 8000
MODELS_DIR = ROOT / "reference_runs" / "models"
DATA_DIR = ROOT / "reference_runs" / "data"
BIN = Path(sys.executable).parent  # fairseq-* console scripts live beside this interpreter

COMMON_TRAIN = [
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--dropout", "0.1", "--weight-decay", "0.0001", "--max-tokens", "4096",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-interval", "100",
    "--save-interval", "1", "--no-last-checkpoints", "--seed", "1",
    "--source-lang", SRC, "--target-lang", TGT,  # recorded in the checkpoint, as wmt19's are
]
# Model A: the wmt19 en-ru layout (separate dictionaries, tied decoder input/output embeddings).
TRAIN_A = ["--arch", "transformer", "--encoder-layers", "3", "--decoder-layers", "3",
           "--share-decoder-input-output-embed", "--max-epoch", "11"]
ENSEMBLE_EPOCHS_A = (8, 11)  # model1.pt, model2.pt: two checkpoints of one run, as wmt19 shipped four
# Model B: the wmt19 en-de layout (joined dictionary, all embeddings shared), deep encoder, shallow decoder.
TRAIN_B = ["--arch", "transformer", "--encoder-layers", "4", "--decoder-layers", "2",
           "--share-all-embeddings", "--max-epoch", "7"]


def fairseq_env() -> dict:
    # torch >= 2.6 loads with weights_only=True by default; fairseq's own torch.load calls predate
    # that. Only fairseq's processes get this switch (our checkpoints, written here, are trusted).
    return {**os.environ, "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}


def run(cmd: list, **kw) -> None:
    print("+", " ".join(map(str, cmd)), flush=True)
    subprocess.run([str(c) for c in cmd], check=True, env=fairseq_env(), **kw)


def write_lines(path: Path, lines) -> None:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def stage_corpus(work: Path) -> None:
    out = work / "raw"
    if (out / "train.en").exists():
        return
    pairs = corpus.read_pairs(corpus.fetch_packages(work / "debian"), TGT)
    splits = corpus.split(pairs, N_TEST, N_VALID)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in splits.items():
        write_lines(out / f"{name}.{SRC}", (s for s, _ in part))
        write_lines(out / f"{name}.{TGT}", (t for _, t in part))
        print(f"corpus: {name}: {len(part)} pairs")


def stage_tokenize(work: Path) -> None:
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    out = work / "tok"
    if (out / f"train.{TGT}").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    for lang in (SRC, TGT):
        # As the wmt19 pipeline did: normalize-punctuation.perl, then tokenizer.perl -a (escaping on).
        norm, tok = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
        for split in ("train", "valid", "test"):
            lines = (work / "raw" / f"{split}.{lang}").read_text(encoding="utf-8").splitlines()
            write_lines(out / f"{split}.{lang}", (
                tok.tokenize(norm.normalize(line), escape=True, aggressive_dash_splits=True, return_str=True)
                for line in lines))


def fastbpe_binary(work: Path) -> Path:
    """fastBPE's Python module can only apply codes; learning them needs its C++ tool, built from
    the same PyPI source distribution."""
    exe = work / "fastbpe" / "fast"
    if exe.exists():
        return exe
    src = work / "fastbpe"
    src.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                    "-d", str(src), "fastBPE==0.1.0"], check=True)
    with tarfile.open(next(src.glob("fastBPE-*.tar.gz"))) as tar:
        tar.extractall(src, filter="data")
    pkg = next(p for p in src.glob("fastBPE-*") if p.is_dir())
    subprocess.run(["g++", "-std=c++11", "-pthread", "-O3", str(pkg / "fastBPE" / "main.cc"),
                    f"-I{pkg / 'fastBPE'}", "-o", str(exe)], check=True)
    return exe


def stage_bpe(work: Path) -> None:
    out = work / "bpe"
    if (out / f"test.{TGT}").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    fast = fastbpe_binary(work)
    with open(out / "bpecodes", "w") as f:
        subprocess.run([fast, "learnbpe", str(BPE_MERGES), work / "tok" / f"train.{SRC}",
                        work / "tok" / f"train.{TGT}"], check=True, stdout=f)
    for split in ("train", "valid", "test"):
        for lang in (SRC, TGT):
            subprocess.run([fast, "applybpe", out / f"{split}.{lang}", work / "tok" / f"{split}.{lang}",
                            out / "bpecodes"], check=True)


def stage_preprocess(work: Path) -> None:
    for name, extra in (("sep", []), ("joined", ["--joined-dictionary"])):
        dest = work / f"data-{name}"
        if (dest / "preprocess.log").exists():
            continue
        run([BIN / "fairseq-preprocess", "--source-lang", SRC, "--target-lang", TGT,
             "--trainpref", work / "bpe" / "train", "--validpref", work / "bpe" / "valid",
             "--testpref", work / "bpe" / "test", "--destdir", dest, "--workers", "2", *extra])


def stage_train(work: Path) -> None:
    for name, data, args in (("A", "sep", TRAIN_A), ("B", "joined", TRAIN_B)):
        save = work / f"ckpt-{name}"
        if (save / "done").exists():
            continue
        t0 = time.time()
        run([BIN / "fairseq-train", work / f"data-{data}", "--save-dir", save, *COMMON_TRAIN, *args])
        (save / "done").write_text(f"{time.time() - t0:.0f} s\n")


def train_unigram(out: Path, name: str, lines, vocab_size: int) -> None:
    """A unigram SentencePiece model ``out/name.model`` on these lines (the `sentencepiece` package; one
    thread, every line, full character coverage: the same pieces and scores on every rebuild)."""
    import sentencepiece as spm

    out.mkdir(parents=True, exist_ok=True)
    write_lines(out / "train.txt", lines)
    spm.SentencePieceTrainer.train(input=str(out / "train.txt"), model_prefix=str(out / name),
                                   vocab_size=vocab_size, character_coverage=1.0, model_type="unigram",
                                   num_threads=1, input_sentence_size=0, minloglevel=1)


def strip_optimizer_state(src: Path, dst: Path) -> None:
    """A release checkpoint without the Adam moments (2x the weights) to keep the repository lean.
    The file was written by fairseq-train in this very build, so a full unpickle is safe here."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=False)
    state["last_optimizer_state"] = None
    torch.save(state, dst)


def stage_export(work: Path) -> None:
    a, b = MODELS_DIR / "ende-sep", MODELS_DIR / "ende-joined"
    for d in (a, b):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        shutil.copy(work / "bpe" / "bpecodes", d / "bpecodes")
    for lang in (SRC, TGT):
        shutil.copy(work / "data-sep" / f"dict.{lang}.txt", a / f"dict.{lang}.txt")
        shutil.copy(work / "data-joined" / f"dict.{lang}.txt", b / f"dict.{lang}.txt")
    for i, epoch in enumerate(ENSEMBLE_EPOCHS_A, 1):
        strip_optimizer_state(work / "ckpt-A" / f"checkpoint{epoch}.pt", a / f"model{i}.pt")
    # Model B ships exactly as fairseq-train wrote it, optimizer state included (as wmt19 did).
    last_b = max(glob.glob(str(work / "ckpt-B" / "checkpoint[0-9]*.pt")),
                 key=lambda p: int(Path(p).stem.removeprefix("checkpoint")))
    shutil.copy(last_b, b / "model.pt")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        for lang in (SRC, TGT):
            shutil.copy(work / "raw" / f"{split}.{lang}", DATA_DIR / f"{split}.{lang}")


def stage_bleu(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import sacrebleu

    from parity.fairseq_hub import load_hub, translate_lines

    src = (DATA_DIR / f"test.{SRC}").read_text(encoding="utf-8").splitlines()
    ref = (DATA_DIR / f"test.{TGT}").read_text(encoding="utf-8").splitlines()
    results = {}
    for name, ckpt in (("ende-sep", "model2.pt"), ("ende-sep", "model1.pt:model2.pt"), ("ende-joined", "model.pt")):
        hub = load_hub(MODELS_DIR / name, ckpt, SRC, TGT)
        hyp = translate_lines(hub, src, beam=5)
        bleu = sacrebleu.metrics.BLEU()
        score = bleu.corpus_score(hyp, [ref])
        key = f"{name}/{ckpt}"
        results[key] = {"bleu": round(score.score, 2), "signature": str(bleu.get_signature())}
        print(f"BLEU {key}: {score.score:.2f}  ({bleu.get_signature()})")
    (MODELS_DIR / "bleu.json").write_text(json.dumps(results, indent=1) + "\n")


STAGES = {"corpus": stage_corpus, "tokenize": stage_tokenize, "bpe": stage_bpe,
          "preprocess": stage_preprocess, "train": stage_train, "export": stage_export, "bleu": stage_bleu}


def run_stages(stages: dict, work: Path, doc: str, argv=None) -> None:
    """A build script's command line: the stages asked for (default: all), in order, in a work directory."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=work, help="scratch directory for every stage's outputs")
    ap.add_argument("--only", default=",".join(stages), help="comma-separated stages to run")
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    for name in args.only.split(","):
        print(f"== {name}", flush=True)
        stages[name](args.work)


def main(argv=None) -> None:
    run_stages(STAGES, ROOT / ".build" / "examples", __doc__, argv)


if __name__ == "__main__":
    main()
