"""Rebuild the shipped multilingual example model, the way FAIR built M2M-100.

    python reference_runs/tools/build_multilingual.py [--work DIR] [--only corpus,spm,...]

Stages (each skipped when its output exists in the work directory, so a re-run resumes):
  corpus     Debian gettext catalogs -> raw en-fr and en-es text (msgid English, msgstr the
             translation), split train/valid/test by a hash of the English side
  spm        one joint SentencePiece model for all three languages (the `sentencepiece` package)
  encode     every split as SentencePiece pieces (raw text in, as M2M-100: no Moses step)
  dict       one shared dictionary over all training pieces (fairseq-preprocess --only-source)
  preprocess fairseq-preprocess per language pair with that dictionary on both sides
  train      fairseq-train --task translation_multi_simple_epoch, four directions, M2M-100's layout
             (pre-norm, all embeddings shared, encoder language token = source, decoder language
             token forced first)
  export     M2M-100's release layout under reference_runs/models/m2m-enfres, test/valid sets
             under reference_runs/data/
  bleu       sacreBLEU per direction on the shipped test sets, through fairseq's own generator

Small on purpose: trained in about half an hour on 2 CPU cores, shipped well under 30 MB.
"""
from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402  (sibling script: the bilingual build's helpers)
import corpus  # noqa: E402

ROOT, BIN, DATA_DIR = build.ROOT, build.BIN, build.DATA_DIR
NAME = "m2m-enfres"
MODEL_DIR = build.MODELS_DIR / NAME
PIVOT = "en"  # every catalog pairs English msgids with one language's msgstrs
OTHERS = ("fr", "es")

def m2m100_languages() -> list[str]:
    """M2M-100's `--langs`: 100 codes whose order fixes the language tokens' ids. As M2M-100's
    small models did, every code gets a token though only some directions are trained; with the
    same list, transformers' M2M100Tokenizer (which assumes it) maps the tokens right."""
    from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES

    return list(FAIRSEQ_LANGUAGE_CODES["m2m100"])


DIRECTIONS = ("en-fr", "fr-en", "en-es", "es-en")
PACKAGES = ["libreoffice-l10n-fr", "libreoffice-l10n-es", "gcc-12-locales", "coreutils",
            "binutils-common", "git", "util-linux-locales"]
N_TEST, N_VALID, N_TRAIN = 200, 200, 20000  # per language pair
SPM_VOCAB = 8000
DICT_SUFFIX = "8k"  # M2M-100 names its files after the vocabulary: data_dict.128k.txt, spm.128k.model

TRAIN = [
    "--task", "translation_multi_simple_epoch", "--lang-pairs", ",".join(DIRECTIONS),
    "--encoder-langtok", "src", "--decoder-langtok",
    "--sampling-method", "temperature", "--sampling-temperature", "1.5",
    "--arch", "transformer", "--encoder-layers", "3", "--decoder-layers", "3",
    "--encoder-normalize-before", "--decoder-normalize-before", "--share-all-embeddings",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr", "2e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--dropout", "0.1", "--weight-decay", "0.0001", "--max-tokens", "4096",
    "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-interval", "100",
    "--save-interval", "1", "--no-last-checkpoints", "--seed", "1", "--max-epoch", "6",
]


def pair_of(lang: str) -> str:
    return f"{PIVOT}-{lang}"


def stage_corpus(work: Path) -> None:
    out = work / "raw"
    if (out / f"train.{pair_of(OTHERS[-1])}.{OTHERS[-1]}").exists():
        return
    roots = corpus.fetch_packages(work / "debian", PACKAGES)
    out.mkdir(parents=True, exist_ok=True)
    for lang in OTHERS:
        splits = corpus.split(corpus.read_pairs(roots, lang), N_TEST, N_VALID)
        splits["train"] = splits["train"][:N_TRAIN]
        for name, part in splits.items():
            build.write_lines(out / f"{name}.{pair_of(lang)}.{PIVOT}", (s for s, _ in part))
            build.write_lines(out / f"{name}.{pair_of(lang)}.{lang}", (t for _, t in part))
            print(f"corpus: {pair_of(lang)} {name}: {len(part)} pairs")


def raw_files(work: Path, split: str):
    for lang in OTHERS:
        for side in (PIVOT, lang):
            yield work / "raw" / f"{split}.{pair_of(lang)}.{side}"


def stage_spm(work: Path) -> None:
    if (work / "spm" / "spm.model").exists():
        return
    # English appears once per pair; the duplicates would weigh it twice in the piece statistics.
    lines = dict.fromkeys(line for path in raw_files(work, "train")
                          for line in path.read_text(encoding="utf-8").splitlines())
    build.train_unigram(work / "spm", "spm", lines, SPM_VOCAB)


def stage_encode(work: Path) -> None:
    import sentencepiece as spm

    out = work / "pieces"
    if (out / "done").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    sp = spm.SentencePieceProcessor(model_file=str(work / "spm" / "spm.model"))
    for split in ("train", "valid", "test"):
        for path in raw_files(work, split):
            lines = path.read_text(encoding="utf-8").splitlines()
            build.write_lines(out / path.name, (" ".join(sp.encode(line, out_type=str)) for line in lines))
    build.write_lines(out / "all", (line for path in raw_files(work, "train")
                                    for line in (out / path.name).read_text(encoding="utf-8").splitlines()))
    (out / "done").write_text("")


def stage_dict(work: Path) -> None:
    dest = work / "dict"
    if (dest / "dict.txt").exists():
        return
    build.run([BIN / "fairseq-preprocess", "--only-source", "--trainpref", work / "pieces" / "all",
               "--destdir", dest, "--workers", "2", "--dict-only"])


def stage_preprocess(work: Path) -> None:
    dest = work / "data-bin"
    if (dest / "done").exists():
        return
    shared = work / "dict" / "dict.txt"
    for lang in OTHERS:
        pref = work / "pieces"
        build.run([BIN / "fairseq-preprocess", "--source-lang", PIVOT, "--target-lang", lang,
                   "--trainpref", pref / f"train.{pair_of(lang)}", "--validpref", pref / f"valid.{pair_of(lang)}",
                   "--testpref", pref / f"test.{pair_of(lang)}", "--srcdict", shared, "--tgtdict", shared,
                   "--destdir", dest, "--workers", "2"])
    (dest / "done").write_text("")


def stage_train(work: Path) -> None:
    save = work / "ckpt"
    if (save / "done").exists():
        return
    t0 = time.time()
    build.run([BIN / "fairseq-train", work / "data-bin", "--save-dir", save, *TRAIN,
               "--langs", ",".join(m2m100_languages())])
    (save / "done").write_text(f"{time.time() - t0:.0f} s\n")


def lang_token(lang: str) -> str:
    return f"__{lang}__"  # --lang-tok-style multilingual (fairseq's default, M2M-100's)


def stage_export(work: Path) -> None:
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    MODEL_DIR.mkdir(parents=True)
    last = max((work / "ckpt").glob("checkpoint[0-9]*.pt"), key=lambda p: int(p.stem.removeprefix("checkpoint")))
    build.strip_optimizer_state(last, MODEL_DIR / "model.pt")
    shutil.copy(work / "spm" / "spm.model", MODEL_DIR / f"spm.{DICT_SUFFIX}.model")
    data_dict = (work / "dict" / "dict.txt").read_text(encoding="utf-8")
    (MODEL_DIR / f"data_dict.{DICT_SUFFIX}.txt").write_text(data_dict, encoding="utf-8")
    # As M2M-100's model_dict: the data dictionary with the language tokens the task appended
    # (count 1, as fairseq's add_symbol gives a new symbol), i.e. the embedding's rows in order.
    model_dict = data_dict + "".join(f"{lang_token(lang)} 1\n" for lang in m2m100_languages())
    (MODEL_DIR / f"model_dict.{DICT_SUFFIX}.txt").write_text(model_dict, encoding="utf-8")
    (MODEL_DIR / "language_pairs.txt").write_text(",".join(DIRECTIONS) + "\n", encoding="utf-8")
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        for path in raw_files(work, split):
            shutil.copy(path, DATA_DIR / path.name)


def stage_bleu(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    import sacrebleu

    from parity.fairseq_hub import load_hub, translate_lines

    results = {}
    for direction in DIRECTIONS:
        src, tgt = direction.split("-")
        pair = pair_of(tgt if src == PIVOT else src)
        hub = load_hub(MODEL_DIR, "model.pt", src, tgt)
        hyp = translate_lines(hub, (DATA_DIR / f"test.{pair}.{src}").read_text(encoding="utf-8").splitlines(), beam=5)
        ref = (DATA_DIR / f"test.{pair}.{tgt}").read_text(encoding="utf-8").splitlines()
        bleu = sacrebleu.metrics.BLEU()
        score = bleu.corpus_score(hyp, [ref])
        results[f"{NAME}/model.pt/{direction}"] = {"bleu": round(score.score, 2), "signature": str(bleu.get_signature())}
        print(f"BLEU {NAME} {direction}: {score.score:.2f}  ({bleu.get_signature()})")
    path = build.MODELS_DIR / "bleu.json"
    merged = {**json.loads(path.read_text()), **results} if path.exists() else results
    path.write_text(json.dumps(merged, indent=1) + "\n")


STAGES = {"corpus": stage_corpus, "spm": stage_spm, "encode": stage_encode, "dict": stage_dict,
          "preprocess": stage_preprocess, "train": stage_train, "export": stage_export, "bleu": stage_bleu}


def main(argv=None) -> None:
    build.run_stages(STAGES, ROOT / ".build" / "m2m", __doc__, argv)


if __name__ == "__main__":
    main()
