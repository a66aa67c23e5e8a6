"""Rebuild the shipped BART-style summarizer, the way FAIR fine-tuned bart.large.cnn.

    python reference_runs/tools/build_bart.py [--work DIR] [--only corpus,bpe,...]

Stages (each skipped when its output exists in the work directory, so a re-run resumes):
  corpus     the English manual pages of Debian packages (PACKAGES, rendered by groff): the DESCRIPTION
             section's opening as the document, the NAME line's description as its summary; split
             train/valid/test by a hash of the page's name
  bpe        a byte-level BPE model in GPT-2's format (encoder.json + vocab.bpe, learned by the
             `tokenizers` library from the training text: no GPT-2 download)
  encode     every split as GPT-2 ids, by fairseq's own encoder (gpt2_bpe_utils), "<s>" first
  dict       fairseq-preprocess's dictionary over the training ids (frequency order), with every id
             of the BPE model the data never produced appended (count 0): as bart.large's dict.txt
             covers GPT-2's vocabulary, so that transformers' BartTokenizerFast loads the conversion
  preprocess fairseq-preprocess with that one dictionary on both sides (--joined-dictionary)
  train      fairseq-train --task translation --arch bart_base made small (2+2 layers, d 128), as the
             CNN/DailyMail recipe fine-tunes (all embeddings shared, layernorm_embedding, learned
             positions, post-norm, gelu, unscaled embeddings)
  export     bart.large.cnn's release layout under reference_runs/models/bart-man (model.pt, dict.doc.txt and
             dict.sum.txt, encoder.json, vocab.bpe), test/valid sets under reference_runs/data/
  rouge      ROUGE on the shipped test set through fairseq's own generator (BART's summarization settings)

The sources carry "<s>" first because the hub's encode() puts it there at inference (BARTHubInterface),
and the targets too because its generate() forces it as the first token: trained so, the model means
what the hub does with it. Small on purpose: trained in minutes on 2 CPU cores, shipped under 10 MB.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import build  # noqa: E402  (sibling script: the bilingual build's helpers)
import corpus  # noqa: E402

ROOT, BIN, DATA_DIR = build.ROOT, build.BIN, build.DATA_DIR
NAME = "bart-man"
MODEL_DIR = build.MODELS_DIR / NAME
SRC, TGT = "doc", "sum"              # the file suffixes, as the CNN/DM recipe's "source"/"target"
SECTIONS = ("man1", "man2", "man3", "man5", "man7", "man8")
# Debian packages whose English manual pages make the corpus: fetched with apt-get download and unpacked
# (reference_runs/tools/corpus.py), not read from this machine's /usr/share/man, so the corpus does not
# depend on what happens to be installed (this machine's image has google-cloud-cli: 16,000 generated
# gcloud pages that are no Debian package's and would make the corpus one vendor's CLI reference)
PACKAGES = ["manpages", "manpages-dev", "coreutils", "util-linux", "findutils", "grep", "sed", "tar", "procps",
            "git-man", "openssh-client", "systemd", "dpkg", "apt", "man-db", "groff-base", "binutils-common",
            "postgresql-client-15", "libssl-doc", "libx11-doc", "libcurl4-doc", "libncurses-dev", "perl-doc",
            "tcl8.6-doc", "tk8.6-doc", "libbsd-dev", "libpcap0.8-dev"]
N_TEST, N_VALID = 200, 200
BPE_VOCAB = 2000
MAX_DOC_WORDS = 80                   # the document: the DESCRIPTION's opening, cut at a sentence end
MIN_DOC_WORDS, MAX_SUM_WORDS = 12, 16
MAX_POSITIONS = 256

TRAIN = [
    "--task", "translation", "--source-lang", SRC, "--target-lang", TGT,
    "--arch", "bart_base", "--encoder-layers", "2", "--decoder-layers", "2",
    "--encoder-embed-dim", "128", "--decoder-embed-dim", "128",
    "--encoder-ffn-embed-dim", "512", "--decoder-ffn-embed-dim", "512",
    "--encoder-attention-heads", "4", "--decoder-attention-heads", "4",
    "--max-source-positions", str(MAX_POSITIONS), "--max-target-positions", str(MAX_POSITIONS),
    "--share-all-embeddings", "--share-decoder-input-output-embed", "--layernorm-embedding",
    "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--clip-norm", "0.0",
    "--lr", "1e-3", "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "400",
    "--criterion", "label_smoothed_cross_entropy", "--label-smoothing", "0.1",
    "--dropout", "0.1", "--attention-dropout", "0.0", "--weight-decay", "0.0001", "--max-tokens", "4096",
    "--cpu", "--num-workers", "0", "--no-progress-bar", "--log-interval", "100",
    "--save-interval", "1", "--no-last-checkpoints", "--seed", "1", "--max-epoch", "40", "--patience", "5",
]

_HEADER = re.compile(r"^[A-Z][A-Z0-9 ,/&'()-]*$")
_DASH = re.compile(r"\s[-\u2010\u2011\u2012\u2013\u2014\u2212]\s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s")


def render(path: str) -> str | None:
    """A manual page as groff lays it out for a terminal, one paragraph per line (no wrapping)."""
    raw = gzip.open(path, "rb").read() if path.endswith(".gz") else Path(path).read_bytes()
    if raw.lstrip().startswith(b".so "):
        return None                              # a redirect to another page
    env = {**os.environ, "LC_ALL": "C.UTF-8", "MANWIDTH": "10000"}
    done = subprocess.run(["groff", "-man", "-Tutf8", "-rLL=10000n", "-P-cbou"], input=raw,
                          capture_output=True, env=env, timeout=30)
    return done.stdout.decode("utf-8", "replace") if done.returncode == 0 else None


def sections(text: str) -> dict[str, list[str]]:
    """Section name -> its paragraphs (whitespace collapsed)."""
    out: dict[str, list[str]] = {}
    current, para = None, []
    for line in text.splitlines():
        if line and not line[0].isspace() and _HEADER.match(line.strip()):
            current = line.strip()
            out.setdefault(current, [])
            para = []
            continue
        if current is None:
            continue
        if line.strip():
            para.append(line.strip())
        elif para:
            out[current].append(" ".join(" ".join(para).split()))
            para = []
    if current is not None and para:
        out[current].append(" ".join(" ".join(para).split()))
    return out


def pair(path: str) -> tuple[str, str, str] | None:
    """(page name, document, summary) of one page, or None where it has no usable pair."""
    try:
        text = render(path)
    except (OSError, subprocess.TimeoutExpired, EOFError):
        return None
    if not text:
        return None
    found = sections(text)
    name_paras, description = found.get("NAME"), found.get("DESCRIPTION")
    if not name_paras or not description:
        return None
    parts = _DASH.split(name_paras[0], maxsplit=1)
    if len(parts) != 2:
        return None
    names, summary = parts[0].strip(), parts[1].strip()
    words = []
    for paragraph in description:
        for sentence in _SENTENCE_END.split(paragraph):
            if len(words) >= MIN_DOC_WORDS and len(words) + len(sentence.split()) > MAX_DOC_WORDS:
                break
            words += sentence.split()
        else:
            continue
        break
    document = " ".join(words[:MAX_DOC_WORDS])
    if len(words) < MIN_DOC_WORDS or not 2 <= len(summary.split()) <= MAX_SUM_WORDS:
        return None
    return names, document, summary


def split_of(name: str) -> str:
    h = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 1000
    return "test" if h < 40 else "valid" if h < 80 else "train"


def stage_corpus(work: Path) -> None:
    out = work / "raw"
    if (out / f"train.{TGT}").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    roots = corpus.fetch_packages(work / "debian", PACKAGES)
    pages = sorted(str(p) for root in roots for s in SECTIONS for p in (root / "usr/share/man" / s).glob("*")
                   if p.is_file() and not p.is_symlink())
    with ProcessPoolExecutor(2) as pool:
        pairs = [p for p in pool.map(pair, pages, chunksize=64) if p]
    seen_doc, seen_name, splits = set(), set(), {"train": [], "valid": [], "test": []}
    for names, document, summary in pairs:
        if document in seen_doc or names in seen_name:
            continue                              # one page per document (aliases, duplicated packages)
        seen_doc.add(document)
        seen_name.add(names)
        splits[split_of(names)].append((document, summary))
    splits["test"], splits["valid"] = splits["test"][:N_TEST], splits["valid"][:N_VALID]
    for split, rows in splits.items():
        build.write_lines(out / f"{split}.{SRC}", [d for d, _ in rows])
        build.write_lines(out / f"{split}.{TGT}", [s for _, s in rows])
        print(f"{split}: {len(rows)} pairs", flush=True)
    (out / "pages.txt").write_text(f"{len(pages)} pages read, {len(pairs)} with a pair\n")


def stage_bpe(work: Path) -> None:
    from tokenizers import ByteLevelBPETokenizer

    out = work / "gpt2"
    if (out / "vocab.bpe").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer(add_prefix_space=False)
    bpe.train([str(work / "raw" / f"train.{s}") for s in (SRC, TGT)], vocab_size=BPE_VOCAB, min_frequency=2,
              show_progress=False)
    bpe.save_model(str(out))
    (out / "vocab.json").rename(out / "encoder.json")
    (out / "merges.txt").rename(out / "vocab.bpe")


def stage_encode(work: Path) -> None:
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    out = work / "ids"
    if (out / f"test.{TGT}").exists():
        return
    out.mkdir(parents=True, exist_ok=True)
    encoder = get_encoder(str(work / "gpt2" / "encoder.json"), str(work / "gpt2" / "vocab.bpe"))
    for split in ("train", "valid", "test"):
        for side in (SRC, TGT):
            lines = (work / "raw" / f"{split}.{side}").read_text(encoding="utf-8").splitlines()
            # cut as BARTHubInterface.encode cuts at inference: max_positions - 2 ids, room for <s> and </s>
            build.write_lines(out / f"{split}.{side}", ("<s> " + " ".join(map(str, encoder.encode(line)[:MAX_POSITIONS - 2]))
                                                        for line in lines))


def stage_dict(work: Path) -> None:
    out = work / "dict"
    if (out / "dict.txt").exists():
        return
    build.run([BIN / "fairseq-preprocess", "--only-source", "--trainpref", work / "ids" / f"train.{SRC}",
               "--destdir", out / "src", "--dict-only", "--padding-factor", "1", "--workers", "2"])
    build.run([BIN / "fairseq-preprocess", "--only-source", "--trainpref", work / "ids" / f"train.{TGT}",
               "--destdir", out / "tgt", "--dict-only", "--padding-factor", "1", "--workers", "2"])
    counts: dict[str, int] = {}
    for side in ("src", "tgt"):
        for line in (out / side / "dict.txt").read_text(encoding="utf-8").splitlines():
            symbol, count = line.rsplit(" ", 1)
            counts[symbol] = counts.get(symbol, 0) + int(count)
    # frequency order, as fairseq's finalize() sorts (count descending, then first seen)
    ordered = sorted(counts, key=lambda s: -counts[s])
    vocab = json.loads((work / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    missing = [str(i) for i in sorted(vocab.values()) if str(i) not in counts]
    build.write_lines(out / "dict.txt", [f"{s} {counts[s]}" for s in ordered] + [f"{s} 0" for s in missing])


def stage_preprocess(work: Path) -> None:
    dest = work / "data-bin"
    if (dest / "preprocess.log").exists():
        return
    ids, d = work / "ids", work / "dict" / "dict.txt"
    build.run([BIN / "fairseq-preprocess", "--source-lang", SRC, "--target-lang", TGT,
               "--trainpref", ids / "train", "--validpref", ids / "valid", "--testpref", ids / "test",
               "--srcdict", d, "--tgtdict", d, "--destdir", dest, "--workers", "2"])


def stage_train(work: Path) -> None:
    save = work / "ckpt"
    if (save / "done").exists():
        return
    t0 = time.time()
    build.run([BIN / "fairseq-train", work / "data-bin", "--save-dir", save, *TRAIN])
    (save / "done").write_text(f"{time.time() - t0:.0f} s\n")


def stage_export(work: Path) -> None:
    shutil.rmtree(MODEL_DIR, ignore_errors=True)
    MODEL_DIR.mkdir(parents=True)
    best = work / "ckpt" / "checkpoint_best.pt"
    build.strip_optimizer_state(best, MODEL_DIR / "model.pt")
    for side in (SRC, TGT):          # the translation task reads one file per side: the same dictionary
        shutil.copy(work / "dict" / "dict.txt", MODEL_DIR / f"dict.{side}.txt")
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(work / "gpt2" / name, MODEL_DIR / name)
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for split in ("valid", "test"):
        for side in (SRC, TGT):
            shutil.copy(work / "raw" / f"{split}.{side}", DATA_DIR / f"{split}.{SRC}-{TGT}.{side}")


def stage_rouge(work: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from parity.fairseq_hub import load_hub, translate_lines
    from porting.evaluation.scoring import Rouge

    hub = load_hub(MODEL_DIR, "model.pt", SRC, TGT)
    source = (DATA_DIR / f"test.{SRC}-{TGT}.{SRC}").read_text(encoding="utf-8").splitlines()
    reference = (DATA_DIR / f"test.{SRC}-{TGT}.{TGT}").read_text(encoding="utf-8").splitlines()
    hyp = translate_lines(hub, source, beam=5)
    rouge = Rouge()
    scores = rouge.corpus_score(hyp, [reference])
    print(f"ROUGE {NAME}: " + ", ".join(f"{k} {v:.2f}" for k, v in scores.items()) + f"  ({rouge.signature()})")
    path = build.MODELS_DIR / "bleu.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged[f"{NAME}/model.pt/{SRC}-{TGT}"] = {**{k: round(v, 2) for k, v in scores.items()},
                                              "signature": rouge.signature()}
    path.write_text(json.dumps(merged, indent=1) + "\n")


STAGES = {"corpus": stage_corpus, "bpe": stage_bpe, "encode": stage_encode, "dict": stage_dict,
          "preprocess": stage_preprocess, "train": stage_train, "export": stage_export, "rouge": stage_rouge}


def main(argv=None) -> None:
    build.run_stages(STAGES, ROOT / ".build" / "bart", __doc__, argv)


if __name__ == "__main__":
    main()
