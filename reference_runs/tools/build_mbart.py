"""Rebuild the shipped mBART-style example, the way mBART's en-ro model was fine-tuned from mbart.cc25.

    python reference_runs/tools/build_mbart.py [--work DIR] [--only corpus,spm,...]

Stages (each skipped when its output exists in the work directory, so a re-run resumes):
  corpus     Debian gettext catalogs -> raw en-ro text (msgid English, msgstr Romanian), split by a
             hash of the English side (reference_runs/tools/corpus.py)
  spm        one unigram SentencePiece model for both languages, saved as ``sentence.bpe.model``:
             mbart.cc25 names its unigram model that too (fairseq #2359)
  encode     every split as SentencePiece pieces
  dict       ``dict.txt`` in the SentencePiece model's own order, as mbart.cc25's is (piece at
             SentencePiece id + 1: what transformers' MBartTokenizer assumes), counts from the training pieces
  preprocess fairseq-preprocess, the language codes as file suffixes (train.en_XX-ro_RO.en_XX)
  train      fairseq-train --task translation_from_pretrained_bart --arch mbart_base made small, with
             mBART's fine-tuning options (pre-norm, layernorm_embedding, all 25 cc25 language tokens);
             fairseq 0.12 cannot run the task as shipped (its ``args`` AttributeError): trained through
             parity.fairseq_hub.mend_translation_from_pretrained_bart, the workbench's one mend of it
  export     mbart.cc25's release layout under reference_runs/models/mbart-enro (model.pt, sentence.bpe.model,
             its dict.txt as the task reads it: dict.en_XX.txt, dict.ro_RO.txt), test/valid sets under reference_runs/data/
  bleu       sacreBLEU on the shipped test set, through fairseq's own generator

From scratch, not from mbart.cc25 (no hub here): the recipe and the layout are mBART's, the weights small.
"""
from __future__ import annotations

import collections
import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402  (sibling script: the bilingual build's helpers)
import corpus  # noqa: E402

ROOT, DATA_DIR = build.ROOT, build.DATA_DIR
NAME = "mbart-enro"
MODEL_DIR = build.MODELS_DIR / NAME
SRC, TGT = "en_XX", "ro_RO"          # mBART's language codes are the task's file suffixes
PACKAGES = ["libreoffice-l10n-ro", "gcc-12-locales", "coreutils", "binutils-common", "git", "util-linux-locales"]
N_TEST, N_VALID, N_TRAIN = 200, 200, 20000
SPM_VOCAB = 6000
MAX_POSITIONS = 256


def cc25_languages() -> list[str]:
    """mbart.cc25's --langs: 25 codes whose order fixes the language tokens' ids (appended after the
    dictionary, then <mask>). As mBART's README says, fine-tuning adds them all; with the same list,
    transformers' MBartTokenizer (which assumes it) maps the tokens right."""
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    return list(FAIRSEQ_LANGUAGE_CODES)


TRAIN = [
    "--task", "translation_from_pretrained_bart", "--source-lang", SRC, "--target-lang", TGT,
    "--arch", "mbart_base", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--max-source-positions", str(MAX_POSITIONS), "--max-target-positions", str(MAX_POSITIONS),
    # mBART's fine-tuning command (fairseq's examples/mbart/README.md)
    "--encoder-normalize-before", "--decoder-normalize-before", "--layernorm-embedding",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--dropout", "0.1", "--attention-dropout", "0.0", "--weight-decay", "0.0001", "--max-tokens", "4096",
    "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-interval", "100",
    "--save-interval", "1", "--no-last-checkpoints", "--seed", "1", "--max-epoch", "30", "--patience", "5",
]


def stage_corpus(work: Path) -> None:
    out = work / "raw"
    if (out / f"train.{TGT}").exists():
        return
    roots = corpus.fetch_packages(work / "debian", PACKAGES)
    out.mkdir(parents=True, exist_ok=True)
    splits = corpus.split(corpus.read_pairs(roots, "ro"), N_TEST, N_VALID)
    splits["train"] = splits["train"][:N_TRAIN]
    for name, part in splits.items():
        build.write_lines(out / f"{name}.{SRC}", (s for s, _ in part))
        build.write_lines(out / f"{name}.{TGT}", (t for _, t in part))
        print(f"corpus: en-ro {name}: {len(part)} pairs")


def stage_spm(work: Path) -> None:
    if (work / "spm" / "sentence.bpe.model").exists():
        return
    lines = [line for side in (SRC, TGT) for line in (work / "raw" / f"train.{side}").read_text(encoding="utf-8").splitlines()]
    build.train_unigram(work / "spm", "sentence.bpe", lines, SPM_VOCAB)


def stage_encode(work: Path) -> None:
    import sentencepiece as spm

    out = work / "pieces"
    if (out / "done").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm" / "sentence.bpe.model"))
    for split in ("train", "valid", "test"):
        for side in (SRC, TGT):
            lines = (work / "raw" / f"{split}.{side}").read_text(encoding="utf-8").splitlines()
            build.write_lines(out / f"{split}.{side}", (" ".join(sp.encode(line, out_type=str)) for line in lines))
    (out / "done").write_text("")


def stage_dict(work: Path) -> None:
    """Every SentencePiece piece after its three specials, in the model's order, with its count in the
    training pieces (mbart.cc25's dict.txt has the same shape)."""
    import sentencepiece as spm

    dest = work / "dict"
    if (dest / "dict.txt").exists():
        return
    dest.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm" / "sentence.bpe.model"))
    counts = collections.Counter(piece for side in (SRC, TGT)
                                 for line in (work / "pieces" / f"train.{side}").read_text(encoding="utf-8").splitlines()
                                 for piece in line.split())
    build.write_lines(dest / "dict.txt", (f"{sp.id_to_piece(i)} {counts[sp.id_to_piece(i)]}"
                                          for i in range(3, sp.get_piece_size())))


def stage_preprocess(work: Path) -> None:
    dest = work / "data-bin"
    if (dest / "preprocess.log").exists():
        return
    pieces, d = work / "pieces", work / "dict" / "dict.txt"
    build.run([build.BIN / "fairseq-preprocess", "--source-lang", SRC, "--target-lang", TGT,
               "--trainpref", pieces / "train", "--validpref", pieces / "valid", "--testpref", pieces / "test",
               "--srcdict", d, "--tgtdict", d, "--destdir", dest, "--workers", "2"])


# fairseq-train, with the task's AttributeError mended first (parity.fairseq_hub, the one place)
MENDED_TRAIN = ("import sys; sys.path.insert(0, {root!r}); "
                "from parity.fairseq_hub import mend_translation_from_pretrained_bart as mend; mend(); "
                "from fairseq_cli.train import cli_main; cli_main()")


def stage_train(work: Path) -> None:
    save = work / "ckpt"
    if (save / "done").exists():
        return
    t0 = time.time()
    build.run([sys.executable, "-c", MENDED_TRAIN.format(root=str(ROOT)), work / "data-bin", "--save-dir", save,
               *TRAIN, "--langs", ",".join(cc25_languages())])
    (save / "done").write_text(f"{time.time() - t0:.0f} s\n")


def stage_export(work: Path) -> None:
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    MODEL_DIR.mkdir(parents=True)
    build.strip_optimizer_state(work / "ckpt" / "checkpoint_best.pt", MODEL_DIR / "model.pt")
    for side in (SRC, TGT):    # mbart.cc25 ships one dict.txt; the task reads it as dict.<lang>.txt per side
        shutil.copy(work / "dict" / "dict.txt", MODEL_DIR / f"dict.{side}.txt")
    shutil.copy(work / "spm" / "sentence.bpe.model", MODEL_DIR / "sentence.bpe.model")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        for side in (SRC, TGT):
            shutil.copy(work / "raw" / f"{split}.{side}", DATA_DIR / f"{split}.{SRC}-{TGT}.{side}")


def stage_bleu(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import sacrebleu

    from parity.fairseq_hub import load_hub, translate_lines

    hub = load_hub(MODEL_DIR, "model.pt", SRC, TGT)
    hyp = translate_lines(hub, (DATA_DIR / f"test.{SRC}-{TGT}.{SRC}").read_text(encoding="utf-8").splitlines(), beam=5)
    ref = (DATA_DIR / f"test.{SRC}-{TGT}.{TGT}").read_text(encoding="utf-8").splitlines()
    bleu = sacrebleu.metrics.BLEU()
    score = bleu.corpus_score(hyp, [ref])
    print(f"BLEU {NAME}: {score.score:.2f}  ({bleu.get_signature()})")
    path = build.MODELS_DIR / "bleu.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged[f"{NAME}/model.pt/{SRC}-{TGT}"] = {"bleu": round(score.score, 2), "signature": str(bleu.get_signature())}
    path.write_text(json.dumps(merged, indent=1) + "\n")


STAGES = {"corpus": stage_corpus, "spm": stage_spm, "encode": stage_encode, "dict": stage_dict,
          "preprocess": stage_preprocess, "train": stage_train, "export": stage_export, "bleu": stage_bleu}


def main(argv=None) -> None:
    build.run_stages(STAGES, ROOT / ".build" / "mbart", __doc__, argv)


if __name__ == "__main__":
    main()
