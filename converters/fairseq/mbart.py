"""A transformers MBart directory (as published on the hub, or written by ``save_pretrained``) read back as
the fairseq mBART model it was made from (``--task translation_from_pretrained_bart``, one direction),
then written by the same phases as ``convert fairseq`` (convert.finish).

    porting convert transformers --model HF_DIR --out OUT [--force]

MBart is transformers' port of fairseq's mBART: pre-norm with final layer norms, learned positions
(fairseq's table with its two leading rows), layernorm_embedding, fairseq's layer names under ``model.``,
one shared embedding. What the directory lacks is the fairseq side, recovered here:
- the options, from MBartConfig's fields (embeddings scaled unless ``scale_embedding`` is false);
- the dictionary: vocab.json where our converter wrote one; otherwise the layout MBartTokenizer assumes
  (the SentencePiece pieces at their id + 1, then mbart.cc25's 25 language codes, then <mask>), which is
  what a hub MBart directory's tokenizer means;
- the direction (config.json's ``langs``, or the tokenizer's src_lang / tgt_lang) and the task's --langs;
- the ties and fairseq's generation settings; ``final_logits_bias`` must be zero (fairseq has no bias there).
"""
from __future__ import annotations

import json
from pathlib import Path

from converters.fairseq.bart import bart_options, bart_tensors
from converters.fairseq.dictionary import Dictionary
from converters.fairseq.families import mbart as family
from converters.fairseq.hf_dir import SIZE_FIELDS, architecture, begin, config_problems, read_generation
from converters.fairseq.job import ConversionError, Job, Member
from porting.files import sha256_file
from porting.format import MBART, SENTENCEPIECE_FILE, SHARED_VOCAB_FILE, SPECIALS, ConfigError
from porting.tokenizer import read_vocab, vocabulary_symbols

FILES = ("config.json",)


def read_mbart(hf_dir: Path, out: Path, config: dict, force: bool = False, license: str | None = None) -> Job:
    """An MBart directory as a conversion job, every problem collected (config: its config.json)."""
    if problems := config_problems(config, f"--model {hf_dir}/config.json", (*SIZE_FIELDS, "vocab_size")):
        raise ConversionError(problems)
    langs = _direction(hf_dir, config)
    job, weights = begin(hf_dir, out, config, FILES, "MBart", force, license, langs or (None, None))
    if not (hf_dir / SENTENCEPIECE_FILE).is_file():
        # transformers 5's save_pretrained keeps tokenizer.json alone; its Unigram table is not the
        # SentencePiece model whose encoder the port (and fairseq) runs
        job.problems.append(f"--model {hf_dir}: no {SENTENCEPIECE_FILE}: the port encodes with the SentencePiece "
                            "model itself; copy it into the directory (mBART's fairseq releases ship it as "
                            "sentence.bpe.model)")
        raise ConversionError(job.problems)
    if langs is None:
        job.problems.append(f"--model {hf_dir}: no direction: neither config.json's langs nor the tokenizer's "
                            "src_lang and tgt_lang name it")
    task_langs = tuple((config.get("porting") or {}).get("mbart", {}).get("langs") or _cc25_languages())
    d = _dictionary(hf_dir, config["vocab_size"], task_langs, job.problems)
    if weights is None or d is None or langs is None:
        raise ConversionError(job.problems)
    path, state = weights
    tensors = bart_tensors(state, path, job.problems, "MBart")
    # Bart's, and MBart is pre-norm with final norms (it has no switch for that either)
    options = {**bart_options(config, "mbart_from_transformers"),
               "encoder_normalize_before": True, "decoder_normalize_before": True}
    arch = architecture(hf_dir, options)
    task = {"_name": family.TASK, "langs": ",".join(task_langs), "source_lang": langs[0], "target_lang": langs[1]}
    member = Member(path, sha256_file(path), arch, options, tensors=tensors, langs=langs, task=task)
    job.members, job.dicts, job.family, job.mbart_langs = [member], {"src": d, "tgt": d}, MBART, task_langs
    job.dict_names = dict.fromkeys(job.dicts, SHARED_VOCAB_FILE)
    job.sentencepiece = hf_dir / SENTENCEPIECE_FILE
    job.data_files.append(job.sentencepiece)
    read_generation(job, member, hf_dir)
    return job


def _direction(hf_dir: Path, config: dict) -> tuple[str, str] | None:
    langs = config.get("langs")
    if isinstance(langs, list) and len(langs) == 2 and all(isinstance(x, str) for x in langs):
        return tuple(langs)
    try:
        settings = json.loads((hf_dir / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    src, tgt = (settings.get(k) if isinstance(settings, dict) else None for k in ("src_lang", "tgt_lang"))
    return (src, tgt) if isinstance(src, str) and isinstance(tgt, str) else None


def _cc25_languages() -> tuple[str, ...]:
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    return tuple(FAIRSEQ_LANGUAGE_CODES)


def _dictionary(hf_dir: Path, vocab_size: int, task_langs: tuple[str, ...], problems: list[str]) -> Dictionary | None:
    """fairseq's symbols by id: vocab.json's where there is one, else MBartTokenizer's layout; as many as the
    model has rows (MBartTokenizer counts <mask> too; a hub directory whose embedding lacks it ends earlier)."""
    try:
        if (hf_dir / SHARED_VOCAB_FILE).is_file():
            symbols = vocabulary_symbols(read_vocab(hf_dir / SHARED_VOCAB_FILE), f"{hf_dir}/{SHARED_VOCAB_FILE}")
        else:
            import sentencepiece

            sp = sentencepiece.SentencePieceProcessor(model_file=str(hf_dir / SENTENCEPIECE_FILE))
            symbols = [*SPECIALS, *(sp.id_to_piece(i) for i in range(3, sp.get_piece_size())),
                       *(family.token(lang) for lang in task_langs), family.MASK][:vocab_size]
    except (ConfigError, OSError, RuntimeError) as e:
        problems.append(f"--model {hf_dir}: its tokenizer files are not MBartTokenizer's ({str(e).strip()})")
        return None
    if len(symbols) != vocab_size:
        problems.append(f"--model {hf_dir}: the tokenizer names {len(symbols)} symbols, the model has {vocab_size} rows")
        return None
    return Dictionary(symbols, {s: i for i, s in enumerate(symbols)}, [1] * len(symbols))
