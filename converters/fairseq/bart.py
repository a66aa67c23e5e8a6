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

from pathlib import Path

from converters.fairseq.dictionary import Dictionary
from converters.fairseq.families import bart as family
from converters.fairseq.hf_dir import SIZE_FIELDS, architecture, begin, config_problems, read_generation, transformer_options
from converters.fairseq.job import ConversionError, Job, Member
from converters.fairseq.m2m100 import fairseq_names
from porting.files import sha256_file
from porting.format import BART, BYTE_MERGES_FILE, GPT2_ENCODER_FILE, SHARED_VOCAB_FILE, ConfigError
from porting.tokenizer import byte_level_symbols

FILES = ("config.json", SHARED_VOCAB_FILE, BYTE_MERGES_FILE)
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
    job, weights = begin(hf_dir, out, config, FILES, "Bart", force, license, langs)
    if not (hf_dir / GPT2_ENCODER_FILE).is_file():
        job.problems.append(f"--model {hf_dir}: no {GPT2_ENCODER_FILE}: fairseq names each piece by its GPT-2 id, "
                            "which only GPT-2's encoder.json gives; copy it into the directory (BART's fairseq "
                            "releases and GPT-2 ship it)")
        raise ConversionError(job.problems)
    d = _dictionary(hf_dir, job.problems)
    if weights is None or d is None:
        raise ConversionError(job.problems)
    path, state = weights
    bias = state.pop("final_logits_bias", None)
    if bias is not None and bool(bias.any()):
        job.problems.append(f"{path}: final_logits_bias is not zero: fairseq's BART has no bias on its output")
    tensors = fairseq_names(state, path, job.problems, "Bart")
    # Bart has no switch for these: post-norm, learned positions, layernorm_embedding, one shared embedding
    options = {**transformer_options(config), "arch": "bart_from_transformers",
               "activation_fn": config.get("activation_function", "gelu"),
               "no_scale_embedding": not config.get("scale_embedding", False),
               "encoder_learned_pos": True, "decoder_learned_pos": True, "layernorm_embedding": True,
               "share_all_embeddings": True, "share_decoder_input_output_embed": True}
    arch = architecture(hf_dir, options)
    member = Member(path, sha256_file(path), arch, options, tensors=tensors, langs=langs)
    job.members, job.dicts, job.family = [member], {"src": d, "tgt": d}, BART
    job.dict_names = dict.fromkeys(job.dicts, SHARED_VOCAB_FILE)
    family.gather_gpt2(job, hf_dir / GPT2_ENCODER_FILE, hf_dir / BYTE_MERGES_FILE)
    read_generation(job, member, hf_dir)
    return job


def _dictionary(hf_dir: Path, problems: list[str]) -> Dictionary | None:
    try:
        symbols = byte_level_symbols(hf_dir)
    except ConfigError as e:
        problems.append(str(e))
        return None
    return Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))
