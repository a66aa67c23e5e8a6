"""A transformers M2M100 directory (as published on the hub, or written by ``save_pretrained``) read
back as the fairseq ``translation_multi_simple_epoch`` model it was made from, then written by the
same phases as ``convert fairseq`` (convert.finish).

    porting convert transformers --model HF_DIR --out OUT [--force]

M2M100 is transformers' port of fairseq's multilingual transformer: pre-norm with a final layer norm
on both sides, sinusoidal positions, fairseq's layer names under ``model.``, one shared embedding
(``model.shared``). What the directory lacks is the fairseq side, recovered here:
- the options, from M2M100Config's fields;
- the dictionary, from the tokenizer the directory holds:
  M2M100Tokenizer: ``vocab.json``'s pieces at their ids, then the language tokens where it puts
  them (right after the vocabulary, in its fixed list's order: ``language_codes``);
  NllbTokenizer: ``tokenizer.json``'s vocabulary and added tokens at their ids, its bare language
  codes (``eng_Latn``) renamed to fairseq's ``__eng_Latn__`` (``nllb_dictionary``);
- the task: M2M-100's placement (the source's token first, the target's forced first:
  ``--encoder-langtok src --decoder-langtok``, style ``__xx__``); the directions it was trained on are
  not in such a directory, so none are recorded;
- the ties (transformers saves the shared embedding once) and fairseq's generation settings.
A directory our converter wrote and its porting section removed (as a hub download would be) converts
back to the same weights, dictionary and language tokens.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from converters.fairseq import multilingual, nllb
from converters.fairseq.dictionary import Dictionary
from converters.fairseq.hf_dir import (
    SIZE_FIELDS,
    architecture,
    begin,
    config_problems,
    read_generation,
    transformer_options,
)
from converters.fairseq.job import ConversionError, Job, Member
from porting.files import sha256_file
from porting.format import MULTILINGUAL, SENTENCEPIECE_FILE, SHARED_VOCAB_FILE, SPECIALS
from porting.model import layout

FILES = ("config.json", SHARED_VOCAB_FILE, SENTENCEPIECE_FILE, "tokenizer_config.json")
# NllbTokenizer's: transformers 5's save_pretrained writes tokenizer.json but no SentencePiece model;
# the port encodes with SentencePiece, so the model must be there (the hub's NLLB repositories ship it)
NLLB_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")
TOKENIZER_CLASSES = ("M2M100Tokenizer", "NllbTokenizer", "NllbTokenizerFast")


def language_codes(tokenizer_config: dict, problems: list[str], label: str) -> list[str]:
    """The languages M2M100Tokenizer numbers, in its order: its fixed list named by ``language_codes``."""
    name = tokenizer_config.get("language_codes", "m2m100")
    try:
        from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES
    except ImportError:
        problems.append(f"{label}: reading M2M100Tokenizer's language list needs transformers installed "
                        "(pip install '.[peers]')")
        return []
    if name not in FAIRSEQ_LANGUAGE_CODES:
        problems.append(f"{label}: language_codes {name!r}: M2M100Tokenizer knows {', '.join(FAIRSEQ_LANGUAGE_CODES)}")
        return []
    return list(FAIRSEQ_LANGUAGE_CODES[name])


def dictionary(vocab: dict, langs: list[str], problems: list[str], label: str) -> Dictionary | None:
    """vocab.json's pieces at their ids, then one ``__xx__`` token per language, as M2M100Tokenizer
    numbers them; fairseq's ids must come out 0..n-1 with its four specials first."""
    if not isinstance(vocab, dict) or not all(isinstance(i, int) and not isinstance(i, bool) for i in vocab.values()):
        problems.append(f"{label}: not a JSON object of pieces to ids")
        return None
    symbols = [s for s, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
    symbols += [multilingual.LANG_TOK_STYLES["multilingual"].format(lang) for lang in langs]
    ids = [*sorted(vocab.values()), *range(len(vocab), len(vocab) + len(langs))]
    if ids != list(range(len(symbols))) or symbols[:len(SPECIALS)] != list(SPECIALS):
        problems.append(f"{label}: its ids are not 0..n-1 with {', '.join(SPECIALS)} first")
        return None
    return Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))


def nllb_dictionary(tokenizer_json: dict, tokenizer_config: dict, vocab_size: int, problems: list[str],
                    label: str) -> tuple[list[str], Dictionary] | None:
    """NllbTokenizer's vocabulary and added tokens at their ids; its language codes (the special tokens
    in NLLB-200's spelling, ``eng_Latn``) renamed to fairseq's ``__eng_Latn__``. The ``<mask>`` it adds
    past the model's rows (ids >= vocab_size) is no symbol of the model's and is left out."""
    model = tokenizer_json.get("model") if isinstance(tokenizer_json, dict) else None
    vocab = model.get("vocab") if isinstance(model, dict) else None
    if not isinstance(vocab, dict):
        problems.append(f"{label}: no BPE vocabulary (model.vocab) as NllbTokenizer writes")
        return None
    by_id = {i: s for s, i in vocab.items() if isinstance(i, int)}
    by_id.update({t["id"]: t["content"] for t in tokenizer_json.get("added_tokens", []) if isinstance(t, dict)})
    by_id = {i: s for i, s in by_id.items() if i < vocab_size}
    specials = tokenizer_config.get("extra_special_tokens") or tokenizer_config.get("additional_special_tokens") or []
    id_of = {s: i for i, s in by_id.items()}
    langs = sorted((s for s in specials if isinstance(s, str) and nllb.NLLB_CODE.fullmatch(s) and s in id_of),
                   key=id_of.__getitem__)
    if not langs:
        problems.append(f"{label}: no language codes among its special tokens")
        return None
    symbols = [by_id.get(i) for i in range(len(by_id))]
    renamed = {code: multilingual.LANG_TOK_STYLES["multilingual"].format(code) for code in langs}
    if None in symbols or symbols[:len(SPECIALS)] != list(SPECIALS):
        problems.append(f"{label}: its ids are not 0..n-1 with {', '.join(SPECIALS)} first")
        return None
    symbols = [renamed.get(s, s) for s in symbols]
    return langs, Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))


def fairseq_names(state: dict[str, torch.Tensor], path: Path, problems: list[str],
                  kind: str = "M2M100") -> dict[str, torch.Tensor]:
    """M2M100's (and Bart's) names are fairseq's under ``model.``; its one shared embedding is every
    embedding fairseq ties with share_all_embeddings, and lm_head the output projection (when saved at all)."""
    out = {}
    for key, value in state.items():
        if key in ("model.shared.weight", "lm_head.weight"):
            continue
        if not key.startswith(layout.PREFIX) or not isinstance(value, torch.Tensor):
            problems.append(f"{path}: {key} is no {kind} weight")
            continue
        out[key[len(layout.PREFIX):]] = value
    shared = state.get("model.shared.weight", out.get("decoder.embed_tokens.weight"))
    if shared is None:
        problems.append(f"{path}: no embedding (model.shared.weight)")
        return out
    for key in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight"):
        out.setdefault(key, shared)
    out["decoder.output_projection.weight"] = state.get("lm_head.weight", shared)
    return out


def read_tokenizer_config(hf_dir: Path) -> dict | None:
    """An M2M100 directory's tokenizer_config.json, checked to declare a tokenizer this reads (None: the
    file is not there, which begin reports with the other missing files), or one error saying why not."""
    path = hf_dir / "tokenizer_config.json"
    if not path.is_file():
        return None
    try:
        tokenizer_config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConversionError([f"--model {path}: not readable JSON ({e})"]) from None
    name = tokenizer_config.get("tokenizer_class") if isinstance(tokenizer_config, dict) else None
    if name not in TOKENIZER_CLASSES:
        raise ConversionError([f"--model {path}: tokenizer {name!r}; this reads {', '.join(TOKENIZER_CLASSES)}"])
    return tokenizer_config


def _read_dictionary(hf_dir: Path, tokenizer_config: dict, nllb_tokenizer: bool, vocab_size: int,
                     problems: list[str]) -> tuple[list[str], Dictionary | None]:
    """(the languages in id order, the fairseq dictionary) from the directory's tokenizer files."""
    try:
        vocab = json.loads((hf_dir / ("tokenizer.json" if nllb_tokenizer else SHARED_VOCAB_FILE)).read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConversionError([f"--model {hf_dir}: tokenizer files not readable JSON ({e})"]) from None
    if not nllb_tokenizer:
        langs = language_codes(tokenizer_config, problems, f"{hf_dir}/tokenizer_config.json")
        return langs, dictionary(vocab, langs, problems, f"{hf_dir}/{SHARED_VOCAB_FILE}") if langs else None
    if tokenizer_config.get("legacy_behaviour"):
        # legacy NllbTokenizer puts the source's code after </s>: no placement of fairseq's task
        problems.append(f"{hf_dir}/tokenizer_config.json: legacy_behaviour puts the language code after </s>, "
                        "which fairseq's --encoder-langtok cannot express (NLLB-200 was trained with it first)")
    if not (hf_dir / SENTENCEPIECE_FILE).is_file():
        problems.append(f"--model {hf_dir}: no {SENTENCEPIECE_FILE}: the port encodes with SentencePiece, and "
                        "transformers' save_pretrained writes NllbTokenizer's tokenizer.json only; copy the model's "
                        f"{SENTENCEPIECE_FILE} (the hub's NLLB repositories ship it) into the directory")
    found = nllb_dictionary(vocab, tokenizer_config, vocab_size, problems, f"{hf_dir}/tokenizer.json")
    return (found[0], found[1]) if found else ([], None)


def read_m2m100(hf_dir: Path, out: Path, config: dict, force: bool = False, license: str | None = None) -> Job:
    """An M2M100 directory as a conversion job, every problem collected (config: its config.json)."""
    if problems := config_problems(config, f"--model {hf_dir}/config.json", (*SIZE_FIELDS, "vocab_size")):
        raise ConversionError(problems)
    tokenizer_config = read_tokenizer_config(hf_dir)
    nllb_tokenizer = tokenizer_config is not None and tokenizer_config["tokenizer_class"].startswith("Nllb")
    files = NLLB_FILES if nllb_tokenizer else FILES
    job, weights = begin(hf_dir, out, config, files, "M2M100", force, license)
    langs, d = _read_dictionary(hf_dir, tokenizer_config, nllb_tokenizer, config.get("vocab_size", 0), job.problems)
    if weights is None or d is None:
        raise ConversionError(job.problems)
    path, state = weights
    tensors = fairseq_names(state, path, job.problems)
    # M2M100 has no switch for the options not mapped: pre-norm with final layer norms on both sides,
    # sinusoidal positions, no embedding layer norm, one shared embedding
    options = {**transformer_options(config), "encoder_normalize_before": True, "decoder_normalize_before": True,
               "share_all_embeddings": True, "share_decoder_input_output_embed": True}
    arch = architecture(hf_dir, options)
    job.task = multilingual.MultilingualTask(tuple(langs), (), "multilingual", "src", True, False, ("main",), None)
    member = Member(path, sha256_file(path), arch, options, tensors=tensors)
    job.members, job.dicts = [member], {"src": d, "tgt": d}
    job.family = MULTILINGUAL
    job.dict_names = dict.fromkeys(job.dicts, "tokenizer.json" if nllb_tokenizer else SHARED_VOCAB_FILE)
    job.lang_tokens = multilingual.language_tokens(d, job.task)
    job.sentencepiece = hf_dir / SENTENCEPIECE_FILE
    if nllb_tokenizer:
        job.data_files.append(job.sentencepiece)
    read_generation(job, member, hf_dir)
    return job
