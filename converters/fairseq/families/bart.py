"""The BART family (``--arch bart_*``, fine-tuned with ``--task translation`` as bart.large.cnn and
bart.large.xsum were): one dictionary of GPT-2 ids (``dict.<lang>.txt``, the same file on both sides),
GPT-2's byte-level BPE (``encoder.json`` + ``vocab.bpe``); written as transformers' Bart.

fairseq's dictionary names GPT-2's pieces by their GPT-2 ids as decimal strings, in its own frequency
order; transformers' BartTokenizer reads a vocab.json of the pieces themselves at fairseq's ids (the
way the hub's bart-large vocab.json is made), with GPT-2's merges unchanged. Where the dictionary
lacks pieces GPT-2's merges produce, fairseq maps them to <unk> at lookup, which BartTokenizer does
too; BartTokenizerFast refuses to load such a vocabulary (its BPE needs every merge's result), which
is recorded as what transformers cannot express.
"""
from __future__ import annotations

import json

from converters.fairseq import card as model_card
from converters.fairseq.families import bilingual
from converters.fairseq.job import Job
from porting.files import json_text
from porting.format import BART, BYTE_MERGES_FILE, GPT2_ENCODER_FILE, SHARED_VOCAB_FILE, SPECIALS
from porting.tokenizer import gpt2_byte_symbols, parse_byte_merges

NAME = BART
TASKS = ()                          # claimed by its architectures: BART is fine-tuned with --task translation
ARCHS = ("bart_", "mbart_")          # fine-tuned with --task translation, mBART's architectures are BART's too
MODEL_TYPE = "bart"
CONFIG_CLASS = "BartConfig"
ONE_DICTIONARY = True
ROWS = "4 specials + entries"
STORES_DERIVED = False              # learned positions: every table is in the checkpoint
PIPELINE_TAG = "summarization"
GENERATION_FIELDS = {"forced_bos_token_id": 0}   # BARTHubInterface.generate forces <s> first: transformers' way to say it


def check_members(job: Job) -> None:
    """As the bilingual family: the members agree on languages (the task's file suffixes) and architecture."""
    bilingual.check_members(job)


def gather(job: Job) -> None:
    """The dictionaries (one file per side, as the translation task reads them) and GPT-2's files."""
    bilingual.gather_dictionaries(job)
    gather_gpt2(job, job.data_dir / GPT2_ENCODER_FILE, job.data_dir / "vocab.bpe")


def gather_gpt2(job: Job, encoder_file, merges_file) -> None:
    """GPT-2's encoder.json and merges (vocab.bpe; BartTokenizer's merges.txt) into job.gpt2."""
    try:
        text = merges_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        job.problems.append(f"{merges_file}: missing (GPT-2's merges, vocab.bpe, as BART's releases and GPT-2 ship them)")
        text = None
    except (OSError, UnicodeDecodeError) as e:
        job.problems.append(f"{merges_file}: not readable ({e})")
        text = None
    read_gpt2(job, encoder_file, text, merges_file)


def read_gpt2(job: Job, encoder_file, merges_text: str | None, merges_source) -> None:
    """job.gpt2: GPT-2's encoder.json (piece -> GPT-2 id), read here, and the merges' text (from vocab.bpe,
    or from a transformers directory's tokenizer.json) with its merges."""
    job.gpt2 = {} if merges_text is None else {"merges_text": merges_text, "merges": parse_byte_merges(merges_text)}
    job.data_files += [encoder_file, merges_source]
    if not encoder_file.is_file():
        job.problems.append(f"{encoder_file}: missing (GPT-2's encoder.json, as BART's releases and GPT-2 ship it)")
        return
    try:
        encoder = json.loads(encoder_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        job.problems.append(f"{encoder_file}: not readable ({e})")
        return
    if not (isinstance(encoder, dict) and all(type(i) is int for i in encoder.values())):
        job.problems.append(f"{encoder_file}: not a JSON object of pieces to GPT-2 ids")
        return
    job.gpt2["encoder"] = encoder


def check_vocabularies(job: Job) -> None:
    """vocab.json: each GPT-2 id of the dictionary as its piece, at fairseq's id; an id encoder.json lacks
    means another model's files."""
    encoder = job.gpt2.get("encoder")
    if encoder is None:
        return
    pieces = {str(i): p for p, i in encoder.items()}
    symbols = job.dicts["src"].symbols
    unknown = [s for s in symbols[len(SPECIALS):] if s.isdigit() and s not in pieces]
    if unknown:
        job.problems.append(f"{job.dict_name('src')} holds {len(unknown)} GPT-2 ids that {GPT2_ENCODER_FILE} lacks "
                            f"(e.g. {', '.join(unknown[:5])}): the BPE files belong to another model")
        return
    job.vocabs = {"shared": {pieces.get(s, s): i for i, s in enumerate(symbols)}}


def _missing_pieces(job: Job) -> list[str]:
    """GPT-2 pieces its merges produce (or single bytes) that the dictionary lacks: fairseq makes them <unk>."""
    vocab = job.vocabs["shared"]
    produced = [*gpt2_byte_symbols().values(), *("".join(m) for m in job.gpt2.get("merges", []))]
    return [p for p in dict.fromkeys(produced) if p not in vocab]


def bart_config(job: Job) -> dict:
    """transformers' BartConfig fields, filled from fairseq's options. BartLearnedPositionalEmbedding keeps
    fairseq's two leading rows (its offset 2): max_position_embeddings is fairseq's, the table the same."""
    return {"architectures": ["BartForConditionalGeneration"], "model_type": "bart",
            "langs": [job.source_lang, job.target_lang],   # the task's suffixes (as FSMT's config names its languages)
            **model_card.shared_embedding_config(job.members[0].arch, len(job.dicts["src"]), job.dtype),
            "forced_bos_token_id": 0,                      # the hub forces <s> first
            "forced_eos_token_id": 2}


def incompatibilities(job: Job) -> list[str]:
    """What transformers' Bart cannot express (the native port runs it all)."""
    arch, out = job.members[0].arch, []
    if arch.encoder_normalize_before or arch.decoder_normalize_before or arch.decoder_final_norm:
        out.append("pre-norm layers: Bart is post-norm (MBart is pre-norm)")
    if not (arch.encoder_learned_pos and arch.decoder_learned_pos):
        out.append("sinusoidal positions: Bart's are learned")
    if not arch.layernorm_embedding:
        out.append("no layernorm_embedding: Bart always has one")
    if not arch.share_all_embeddings:
        out.append("separate source and target embeddings: Bart shares one")
    if arch.max_source_positions != arch.max_target_positions:
        out.append("max_source_positions != max_target_positions: Bart has one max_position_embeddings")
    return out


def transformers_config(job: Job, tokenizer_problems: list[str]) -> tuple[dict, list[str]]:
    return bart_config(job), incompatibilities(job) + tokenizer_problems


def config_section(job: Job) -> dict:
    return {}


def tokenizer_files(job: Job) -> tuple[dict[str, str], dict[str, bytes], list[str]]:
    """BartTokenizer's vocab.json and merges.txt, GPT-2's encoder.json (it names fairseq's symbols),
    and BartTokenizer's settings; whether BartTokenizerFast can load them."""
    arch = job.members[0].arch
    texts = {SHARED_VOCAB_FILE: json_text(job.vocabs["shared"]),
             BYTE_MERGES_FILE: job.gpt2["merges_text"],
             GPT2_ENCODER_FILE: json_text(job.gpt2["encoder"]),
             "tokenizer_config.json": json_text({
                 "tokenizer_class": "BartTokenizer", "model_max_length": arch.max_source_positions,
                 "add_prefix_space": False, "errors": "replace", "bos_token": "<s>", "eos_token": "</s>",
                 "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                 "mask_token": "<mask>"})}
    problems = []
    if missing := _missing_pieces(job):
        problems.append(f"the dictionary lacks {len(missing)} pieces GPT-2's merges produce (fairseq makes them "
                        "<unk>, as BartTokenizer does): BartTokenizerFast cannot load such a vocabulary; use "
                        "BartTokenizer (use_fast=False)")
    return texts, {}, problems


def card(config: dict, generation: dict) -> tuple[str, list[str], list[str]]:
    """The model card's (title, languages, sections)."""
    src, tgt = config["langs"]
    return (f"# BART ({config['porting']['architecture']['arch']}) fine-tuned {src}→{tgt}, converted", ["en"],
            [*_use(config, generation), *_differences(config, generation)])


def _use(config: dict, generation: dict) -> list[str]:
    lines = ["## Use", "", "Native port (no fairseq needed; reads fairseq's settings from `generation_config.json`):", "",
             "```", "porting translate --model THIS_DIR < documents.txt", "```", ""]
    p = config["porting"]
    if not p["transformers_compatible"]:
        return lines + ["transformers' Bart cannot run this model exactly as fairseq does:", "",
                        *[f"- {why}" for why in p["transformers_incompatibilities"]], ""]
    settings = ", ".join(f"{k}={v!r}" for k, v in model_card.transformers_generation(generation["fairseq"])["settings"].items())
    return lines + [
        "transformers (`generation_config.json` forces `<s>` first, as fairseq's BART hub does):", "",
        "```python", "from transformers import BartForConditionalGeneration, BartTokenizer", "",
        "tok = BartTokenizer.from_pretrained(THIS_DIR)",
        "model = BartForConditionalGeneration.from_pretrained(THIS_DIR)",
        'batch = tok(["a document to summarize"], truncation=True, return_tensors="pt")   # cut as the hub cuts',
        f"out = model.generate(**batch, {settings})",
        "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]


def _differences(config: dict, generation: dict) -> list[str]:
    lines = ["## Where transformers' output can differ from fairseq's", "",
             "- `max_length` counts the decoder's start token and the final `</s>`: fairseq's `max_len_b` "
             f"{generation['fairseq']['max_len_b']} is `max_length={generation['fairseq']['max_len_b'] + 2}`.",
             "- fairseq scores the forced `<s>` with its own log-prob; transformers' `forced_bos_token_id` gives "
             "it 0: scores differ by that log-prob, and with a length penalty other than 1 hypotheses can rank "
             "differently."]
    lines += [f"- not expressible in transformers: {why}"
              for why in model_card.transformers_generation(generation["fairseq"])["not_expressible"]]
    return lines + [""]
