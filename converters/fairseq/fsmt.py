"""A transformers FSMT directory (as published on the hub) read back as the fairseq model it was
made from, then written by the same phases as ``convert fairseq`` (convert.finish).

    porting convert transformers --model HF_DIR --out OUT [--force]

FSMT ("FairSeq Machine Translation") is transformers' port of fairseq's transformer: post-norm,
sinusoidal positions, fairseq's names under ``model.``. What a hub directory lacks is the fairseq
side: the options (read from FSMTConfig's fields), the dictionaries (FSMT's vocabularies with their
``</w>`` marks turned back into fastBPE's ``@@``), the ties (transformers drops tied copies when it
saves) and fairseq's generation settings (mapped back from transformers' names).
"""
from __future__ import annotations

from pathlib import Path

import torch

from converters.fairseq import bpe_check
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
from porting.format import ConfigError
from porting.model import layout
from porting.tokenizer import fairseq_symbols

FILES = ("config.json", "vocab-src.json", "vocab-tgt.json", "merges.txt")


def _dictionary(vocab_file: Path, problems: list[str]) -> Dictionary | None:
    try:
        symbols = fairseq_symbols(vocab_file)
    except ConfigError as e:
        problems.append(str(e))
        return None
    return Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))


def _fairseq_names(state: dict[str, torch.Tensor], path: Path, problems: list[str]) -> dict[str, torch.Tensor]:
    """FSMT's names are fairseq's under ``model.``."""
    out = {}
    for key, value in state.items():
        if not key.startswith(layout.PREFIX) or not isinstance(value, torch.Tensor):
            problems.append(f"{path}: {key} is no FSMT weight")
            continue
        out[key[len(layout.PREFIX):]] = value
    return out


def _restore_ties(tensors: dict[str, torch.Tensor], tied: bool, joined: bool) -> tuple[bool, bool]:
    """transformers saves a tied group once; put the dropped names back and say which ties hold:
    (share_decoder_input_output_embed, share_all_embeddings)."""
    group = ["decoder.embed_tokens.weight", "decoder.output_projection.weight"]
    if joined:
        group.insert(0, "encoder.embed_tokens.weight")
    present = [k for k in group if k in tensors]
    if not present:
        return False, False
    for k in group:
        if k not in tensors and (tied or k == "encoder.embed_tokens.weight"):
            tensors[k] = tensors[present[0]]

    def same(a: str, b: str) -> bool:
        return a in tensors and b in tensors and tensors[a].shape == tensors[b].shape and torch.equal(tensors[a], tensors[b])
    share_output = same("decoder.embed_tokens.weight", "decoder.output_projection.weight")
    share_all = joined and share_output and same("encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
    return share_output, share_all


def _drop_positions(m: Member, problems: list[str]) -> None:
    """FSMT stores fairseq's sinusoidal tables; the output regenerates them: dropped if they are
    exactly fairseq's, refused otherwise (trained positions FSMT would not have)."""
    derived = layout.derived_tensors(m.arch)
    for side in ("encoder", "decoder"):
        key = f"{side}.embed_positions.weight"
        if key not in m.tensors:
            continue
        table = m.tensors.pop(key)
        ours = derived[layout.PREFIX + key]
        if table.shape != ours.shape or not torch.allclose(table.float(), ours, atol=1e-6):
            problems.append(f"{m.path}: {layout.PREFIX + key} is not fairseq's sinusoidal table")
        m.dropped[key] = "FSMT's copy of fairseq's sinusoidal table (checked equal); regenerated from the config"


def read_fsmt(hf_dir: Path, out: Path, config: dict, force: bool = False, license: str | None = None) -> Job:
    """An FSMT directory as a conversion job, every problem collected (config: its config.json)."""
    problems = config_problems(config, f"--model {hf_dir}/config.json", (*SIZE_FIELDS, "src_vocab_size", "tgt_vocab_size"))
    langs = config.get("langs")
    if not (isinstance(langs, list) and len(langs) == 2 and all(isinstance(x, str) and x for x in langs)):
        problems.append(f"--model {hf_dir}/config.json: langs is {langs!r}, not the two languages [source, target]")
    if problems:
        raise ConversionError(problems)
    src, tgt = langs
    job, weights = begin(hf_dir, out, config, FILES, "FSMT", force, license, (src, tgt))
    dicts = {side: _dictionary(hf_dir / f"vocab-{side}.json", job.problems) for side in ("src", "tgt")}
    if weights is None or None in dicts.values():
        raise ConversionError(job.problems)
    path, state = weights
    tensors = _fairseq_names(state, path, job.problems)
    joined = dicts["src"].symbols == dicts["tgt"].symbols
    share_output, share_all = _restore_ties(tensors, bool(config.get("tie_word_embeddings")), joined)
    # FSMT has no switch for the options not mapped: post-norm, sinusoidal positions, no embedding layer norm
    options = {**transformer_options(config), "share_decoder_input_output_embed": share_output,
               "share_all_embeddings": share_all}
    member = Member(path, sha256_file(path), architecture(hf_dir, options), options, tensors=tensors, langs=(src, tgt))
    _drop_positions(member, job.problems)
    job.members, job.dicts = [member], dicts
    job.dict_names = {side: f"vocab-{side}.json" for side in dicts}
    try:
        job.merges = bpe_check.read_merges(hf_dir / "merges.txt")
    except UnicodeDecodeError as e:
        job.problems.append(f"{hf_dir / 'merges.txt'}: not UTF-8 ({e})")
    except ValueError as e:
        job.problems.append(str(e))
    read_generation(job, member, hf_dir)
    return job
