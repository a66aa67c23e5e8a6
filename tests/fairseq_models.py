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


# ---------------------------------------------------------------- the multilingual family

# Tiny translation_multi_simple_epoch models on the shipped multilingual validation sets, one per
# way fairseq's task can place its language tokens. name -> (fairseq-train options, language codes
# for en/fr/es, the dictionary's file name in the release directory, the SentencePiece model: the
# shipped model's unigram one, or a BPE one as NLLB-200's is, trained here).
MULTILINGUAL_COMMON = [
    "--task", "translation_multi_simple_epoch", "--lang-pairs", "{en}-{fr},{fr}-{en},{en}-{es}",
    "--langs", "{en},{es},{fr}", "--sampling-method", "temperature", "--sampling-temperature", "1.5",
    "--arch", "transformer", "--encoder-embed-dim", "32", "--decoder-embed-dim", "32",
    "--encoder-ffn-embed-dim", "64", "--decoder-ffn-embed-dim", "64",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings",
    "--optimizer", "adam", "--lr", "3e-3", "--lr-scheduler", "fixed", "--max-update", "30",
    "--max-tokens", "1024", "--criterion", "cross_entropy", "--dropout", "0.1", "--seed", "3",
    "--cpu", "--num-workers", "0", "--no-progress-bar", "--no-epoch-checkpoints", "--disable-validation",
]
M2M_CODES = {"en": "en", "fr": "fr", "es": "es"}
NLLB_CODES = {"en": "eng_Latn", "fr": "fra_Latn", "es": "spa_Latn"}
MULTILINGUAL_VARIANTS = {
    # M2M-100's placement: __src__ first in the source, __tgt__ forced first in the output
    "m2m": (["--encoder-langtok", "src", "--decoder-langtok"], M2M_CODES, "model_dict.txt", "unigram"),
    # NLLB-200's codes and SentencePiece model type (BPE), the same placement
    "nllb": (["--encoder-langtok", "src", "--decoder-langtok"], NLLB_CODES, "dictionary.txt", "bpe"),
    # mBART-style tokens ([xx], <mask> appended), the target's token replacing </s> on both sides
    "mbart-replacing": (["--encoder-langtok", "tgt", "--decoder-langtok", "--lang-tok-style", "mbart",
                         "--lang-tok-replacing-bos-eos"], M2M_CODES, "dict.txt", "unigram"),
    # only the target's token, at the source's start; the decoder starts from </s> as a bilingual one
    "encoder-tgt-only": (["--encoder-langtok", "tgt"], M2M_CODES, "data_dict.txt", "unigram"),
}
BPE_PIECES = 1000          # the BPE SentencePiece model's size: the 800 shipped lines fill it


def multilingual_texts() -> list[Path]:
    return [shipped.DATA / f"valid.en-{other}.{lang}" for other in ("fr", "es") for lang in ("en", other)]


def sentencepiece_files(kind: str) -> tuple[Path, Path]:
    """(SentencePiece model, data dictionary): the shipped model's for "unigram"; for "bpe" a BPE
    model trained here on the shipped multilingual texts and an NLLB-style dictionary (its pieces in
    its order, after fairseq's four specials)."""
    if kind == "unigram":
        model = shipped.catalog()["m2m-enfres"]
        return model.path / "spm.8k.model", model.path / "data_dict.8k.txt"
    import sentencepiece

    dest = CACHE / f"spm-bpe-{BPE_PIECES}"
    if not (dest / "done").exists():
        tmp = CACHE / f".spm-bpe-{BPE_PIECES}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        sentencepiece.SentencePieceTrainer.train(
            input=[str(p) for p in multilingual_texts()], model_prefix=str(tmp / "spm"), vocab_size=BPE_PIECES,
            model_type="bpe", character_coverage=1.0, num_threads=1, minloglevel=2)
        sp = sentencepiece.SentencePieceProcessor(model_file=str(tmp / "spm.model"))
        (tmp / "dict.txt").write_text("".join(f"{sp.id_to_piece(i)} 1\n" for i in range(sp.get_piece_size())
                                              if not (sp.is_control(i) or sp.is_unknown(i))), encoding="utf-8")
        (tmp / "done").write_text("")
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
    return dest / "spm.model", dest / "dict.txt"


def _multilingual_data(work: Path, codes: dict[str, str], kind: str) -> Path:
    """The shipped multilingual validation sets, SentencePiece-encoded and binarized with the
    `kind` model's data dictionary, language codes renamed to `codes`."""
    tag = "-".join([*codes.values(), kind])
    dest = work / f"data-multi-{tag}"
    if (dest / "done").exists():
        return dest
    import sentencepiece

    spm, data_dict = sentencepiece_files(kind)
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm))
    text = work / f"text-multi-{tag}"
    text.mkdir(parents=True, exist_ok=True)
    tmp = work / f".data-multi-{tag}"
    shutil.rmtree(tmp, ignore_errors=True)
    for other in ("fr", "es"):
        src, tgt = codes["en"], codes[other]
        for lang, code in (("en", src), (other, tgt)):
            lines = read_lines(shipped.DATA / f"valid.en-{other}.{lang}")
            (text / f"train.{src}-{tgt}.{code}").write_text(
                "".join(" ".join(sp.encode(line, out_type=str)) + "\n" for line in lines), encoding="utf-8")
        subprocess.run([BIN / "fairseq-preprocess", "--source-lang", src, "--target-lang", tgt,
                        "--trainpref", text / f"train.{src}-{tgt}", "--destdir", tmp,
                        "--srcdict", data_dict, "--tgtdict", data_dict, "--workers", "1"],
                       check=True, env=_env(), capture_output=True)
    (tmp / "done").write_text("")
    tmp.rename(dest)
    return dest


def build_multilingual(name: str) -> Path:
    """A release directory in M2M-100's layout: model.pt, the SentencePiece model, the data
    dictionary under this variant's file name (the task adds the language tokens, as fairseq does)."""
    extra, codes, dict_name, kind = MULTILINGUAL_VARIANTS[name]
    args = [a.format(**codes) for a in MULTILINGUAL_COMMON] + extra
    key = hashlib.sha256(json.dumps([args, kind]).encode()).hexdigest()[:12]
    out = CACHE / f"multi-{name}-{key}"
    if (out / "model.pt").exists():
        return out
    data = _multilingual_data(CACHE, codes, kind)
    save = CACHE / f".train-multi-{name}-{key}"
    shutil.rmtree(save, ignore_errors=True)
    subprocess.run([BIN / "fairseq-train", data, "--save-dir", save, *args], check=True, env=_env(), capture_output=True)
    spm, data_dict = sentencepiece_files(kind)
    tmp = CACHE / f".multi-{name}-{key}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copy(save / "checkpoint_last.pt", tmp / "model.pt")
    # NLLB-200 ships its SentencePiece model under this name
    shutil.copy(spm, tmp / ("flores200_sacrebleu_tokenizer_spm.model" if kind == "bpe" else spm.name))
    shutil.copy(data_dict, tmp / dict_name)
    tmp.rename(out)
    shutil.rmtree(save, ignore_errors=True)
    return out
