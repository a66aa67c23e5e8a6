"""A transformers Bart directory (as published on the hub, or written by ``save_pretrained``) read back
as the fairseq BART model it was made from (``--arch bart_*`` fine-tuned with ``--task translation``),
then written by the same phases as ``convert fairseq`` (convert.finish).

    porting convert transformers --model HF_DIR --out OUT [--force]

Bart is transformers' port of fairseq's BART: post-norm, learned positions (fairseq's table with its
two leading rows, BartLearnedPositionalEmbedding's offset 2), layernorm_embedding, fairseq's layer names
under ``model.``, one shared embedding. What the directory lacks is the fairseq side, recovered here:
- the options, from BartConfig's fields (with Bart's defaults: gelu, embeddings unscaled);
- the dictionary: vocab.json's pieces at their ids, each named as fairseq names it, by its GPT-2 id.
  That needs GPT-2's encoder.json, which BART's releases and GPT-2 ship and a hub Bart directory lacks:
  the reader asks for it by name rather than invent the names;
- the ties, fairseq's generation settings; ``final_logits_bias`` must be zero (fairseq has no bias there).
"""
from __future__ import annotations

import json
from pathlib import Path

from converters.fairseq.dictionary import Dictionary
from converters.fairseq.families import bart as family
from converters.fairseq.hf_dir import SIZE_FIELDS, architecture, begin, config_problems, read_generation, transformer_options
from converters.fairseq.job import ConversionError, Job, Member
from converters.fairseq.m2m100 import fairseq_names
from porting.files import sha256_file
from porting.format import BART, BYTE_MERGES_FILE, GPT2_ENCODER_FILE, SHARED_VOCAB_FILE, ConfigError
from porting.tokenizer import read_vocab, symbols_of_pieces

FILES = ("config.json", SHARED_VOCAB_FILE, BYTE_MERGES_FILE)
# transformers 5's save_pretrained writes BartTokenizer as tokenizer.json alone (its BPE's vocabulary and merges)
SAVED_FILES = ("config.json", "tokenizer.json")
# fairseq's CNN/DailyMail recipe names its sides so (dict.source.txt, dict.target.txt); a directory our
# converter wrote records its own in config.json's "langs"
DEFAULT_LANGS = ("source", "target")


def read_bart(hf_dir: Path, out: Path, config: dict, force: bool = False, license: str | None = None) -> Job:
    """A Bart directory as a conversion job, every problem collected (config: its config.json)."""
    if problems := config_problems(config, f"--model {hf_dir}/config.json", (*SIZE_FIELDS, "vocab_size")):
        raise ConversionError(problems)
    langs = config.get("langs")
    langs = tuple(langs) if isinstance(langs, list) and len(langs) == 2 and all(isinstance(x, str) for x in langs) \
        else DEFAULT_LANGS
    saved = not (hf_dir / SHARED_VOCAB_FILE).is_file() and (hf_dir / "tokenizer.json").is_file()
    job, weights = begin(hf_dir, out, config, SAVED_FILES if saved else FILES, "Bart", force, license, langs)
    if not (hf_dir / GPT2_ENCODER_FILE).is_file():
        job.problems.append(f"--model {hf_dir}: no {GPT2_ENCODER_FILE}: fairseq names each piece by its GPT-2 id, "
                            "which only GPT-2's encoder.json gives; copy it into the directory (BART's fairseq "
                            "releases and GPT-2 ship it)")
        raise ConversionError(job.problems)
    tokenizer = _tokenizer_files(hf_dir, saved, config["vocab_size"], job.problems)
    if weights is None or tokenizer is None:
        raise ConversionError(job.problems)
    vocab, merges_text = tokenizer
    d = _dictionary(vocab, hf_dir, job.problems)
    if d is None:
        raise ConversionError(job.problems)
    path, state = weights
    tensors = bart_tensors(state, path, job.problems, "Bart")
    options = bart_options(config, "bart_from_transformers")
    arch = architecture(hf_dir, options)
    member = Member(path, sha256_file(path), arch, options, tensors=tensors, langs=langs)
    job.members, job.dicts, job.family = [member], {"src": d, "tgt": d}, BART
    job.dict_names = dict.fromkeys(job.dicts, SHARED_VOCAB_FILE)
    family.read_gpt2(job, hf_dir / GPT2_ENCODER_FILE, merges_text, hf_dir / ("tokenizer.json" if saved else BYTE_MERGES_FILE))
    read_generation(job, member, hf_dir)
    return job


def bart_tensors(state: dict, path: Path, problems: list[str], kind: str) -> dict:
    """fairseq's names of a Bart (or MBart) state dict; ``final_logits_bias`` must be zero (fairseq has none)."""
    bias = state.pop("final_logits_bias", None)
    if bias is not None and bool(bias.any()):
        problems.append(f"{path}: final_logits_bias is not zero: fairseq's BART and mBART have no bias on their output")
    return fairseq_names(state, path, problems, kind)


def bart_options(config: dict, arch: str) -> dict:
    """fairseq's options of a Bart (or MBart) config: what BartConfig's fields say, and what the class has no
    switch for (learned positions, layernorm_embedding, one shared embedding)."""
    return {**transformer_options(config), "arch": arch, "activation_fn": config.get("activation_function", "gelu"),
            "no_scale_embedding": not config.get("scale_embedding", False),
            "encoder_learned_pos": True, "decoder_learned_pos": True, "layernorm_embedding": True,
            "share_all_embeddings": True, "share_decoder_input_output_embed": True}


def _tokenizer_files(hf_dir: Path, saved: bool, vocab_size: int, problems: list[str]) -> tuple[dict, str] | None:
    """(pieces -> fairseq ids, merges.txt's text) from vocab.json and merges.txt, or from tokenizer.json's BPE
    (its added tokens past the model's rows, as the <mask> BartTokenizer adds, left out)."""
    try:
        if not saved:
            return (read_vocab(hf_dir / SHARED_VOCAB_FILE), (hf_dir / BYTE_MERGES_FILE).read_text(encoding="utf-8"))
        model = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab = {p: i for p, i in model["vocab"].items() if i < vocab_size}
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        # GPT-2's header line, as vocab.bpe and BartTokenizer's merges.txt begin
        return vocab, "#version: 0.2\n" + "".join(m + "\n" for m in merges)
    except (ConfigError, OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as e:
        problems.append(f"--model {hf_dir}: its tokenizer files are not BartTokenizer's ({e})")
        return None


def _dictionary(vocab: dict, hf_dir: Path, problems: list[str]) -> Dictionary | None:
    try:
        symbols = symbols_of_pieces(vocab, read_vocab(hf_dir / GPT2_ENCODER_FILE), f"{hf_dir}/{SHARED_VOCAB_FILE}")
    except ConfigError as e:
        problems.append(str(e))
        return None
    return Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))
