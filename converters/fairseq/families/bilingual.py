"""The bilingual fairseq transformer (``--task translation``, wmt19's): two dictionaries
(``dict.<lang>.txt``, joined or not), fastBPE codes, Moses; written as transformers' FSMT."""
from __future__ import annotations

from converters.fairseq import bpe_check
from converters.fairseq import card as model_card
from converters.fairseq.dictionary import DictionaryError, read_dictionary, to_fsmt_vocab
from converters.fairseq.job import Job
from porting.files import json_text
from porting.format import BILINGUAL

NAME = BILINGUAL
TASKS = ("translation",)
ARCHS = ("transformer",)
MODEL_TYPE = "fsmt"                 # transformers' model_type (config.json)
CONFIG_CLASS = "FSMTConfig"
ONE_DICTIONARY = False
ROWS = "4 specials + entries"
STORES_DERIVED = True
PIPELINE_TAG = "translation"
GENERATION_FIELDS: dict = {}


def check_members(job: Job) -> None:
    """Members agree on languages and architecture; the languages come from them unless given."""
    members = job.members
    if job.lang_tok_style:
        job.problems.append(f"--lang-tok-style {job.lang_tok_style}: {members[0].path} is not a multilingual model "
                            "(translation_multi_simple_epoch)")
    langs = {m.langs for m in members}
    if len(langs) > 1:
        job.problems.append(f"ensemble members disagree on languages: {sorted(langs, key=str)}")
    job.source_lang = job.source_lang or members[0].langs[0]
    job.target_lang = job.target_lang or members[0].langs[1]
    for m in members[1:]:
        if m.arch != members[0].arch:
            diff = {k: (v, getattr(m.arch, k)) for k, v in members[0].arch.to_dict().items()
                    if getattr(m.arch, k) != v}
            job.problems.append(f"{m.path}: architecture differs from {members[0].path}: {diff}")
    if len(members) == len(job.checkpoints) and (not job.source_lang or not job.target_lang):
        job.problems.append("languages not recorded in the checkpoint: pass --source-lang and --target-lang")


def gather(job: Job) -> None:
    """The two dictionaries and the BPE codes from the data directory."""
    gather_dictionaries(job)
    _gather_codes(job)


def gather_dictionaries(job: Job) -> None:
    """``dict.<lang>.txt`` of each side, as fairseq's translation task reads them."""
    if job.source_lang and job.target_lang:
        for side, lang in job.sides:
            path = job.data_dir / f"dict.{lang}.txt"
            job.dict_names[side] = path.name
            try:
                job.dicts[side] = read_dictionary(path)
            except FileNotFoundError:
                job.problems.append(f"{path}: missing (the {side} dictionary)")
            except DictionaryError as e:
                job.problems.append(str(e))
            except (OSError, UnicodeDecodeError) as e:
                job.problems.append(f"{path}: not a readable UTF-8 dictionary ({e})")
    job.data_files = [job.data_dir / f"dict.{lang}.txt" for lang in dict.fromkeys((job.source_lang, job.target_lang))]


def _gather_codes(job: Job) -> None:
    codes = job.data_dir / "bpecodes"
    job.data_files.append(codes)
    if not codes.is_file():
        job.problems.append(f"{codes}: missing (the BPE codes)")
        return
    try:
        job.merges = bpe_check.read_merges(codes)
    except UnicodeDecodeError as e:
        job.problems.append(f"{codes}: not UTF-8 ({e})")
    except ValueError as e:
        job.problems.append(str(e))
    except OSError as e:
        job.problems.append(f"{codes}: not readable ({e.strerror})")


def check_vocabularies(job: Job) -> None:
    """FSMT's vocabularies from the dictionaries, and whether the BPE codes can produce their pieces."""
    try:
        job.vocabs = {side: to_fsmt_vocab(d) for side, d in job.dicts.items()}
    except DictionaryError as e:
        job.problems.append(str(e))
    if job.merges is None:
        return
    for side, lang in job.sides:
        fit = bpe_check.producible_share(job.dicts[side], job.merges)
        if fit.share < bpe_check.MIN_PRODUCIBLE_SHARE:
            job.warnings.append(
                f"bpecodes fit dict.{lang}.txt poorly: only {fit.share:.1%} of its {fit.checked} pieces can be "
                f"produced by these codes (e.g. {', '.join(fit.examples)}). The codes may belong to another "
                "model (one wmt19 en-ru archive shipped the en-de codes).")


def transformers_config(job: Job, tokenizer_problems: list[str]) -> tuple[dict, list[str]]:
    arch = job.members[0].arch
    return (model_card.fsmt_config(arch, job.source_lang, job.target_lang, len(job.dicts["src"]),
                                   len(job.dicts["tgt"]), job.dtype,
                                   model_card.transformers_generation(job.generation)["settings"]),
            arch.fsmt_incompatibilities() + tokenizer_problems)


def config_section(job: Job) -> dict:
    return {}


def tokenizer_files(job: Job) -> tuple[dict[str, str], dict[str, bytes], list[str]]:
    """FSMT's: two vocabularies and the merges (FSMTTokenizer can express every such model)."""
    texts = {"vocab-src.json": json_text(job.vocabs["src"]), "vocab-tgt.json": json_text(job.vocabs["tgt"]),
             "tokenizer_config.json": json_text(model_card.tokenizer_config(job.source_lang, job.target_lang,
                                                                              job.members[0].arch)),
             "merges.txt": "".join(f"{a} {b}\n" for a, b in job.merges)}
    return texts, {}, []


def card(config: dict, generation: dict) -> tuple[str, list[str], list[str]]:
    """The model card's (title, languages, sections): how to run it, where transformers' FSMT differs."""
    src, tgt = config["langs"]
    return (f"# {src}→{tgt} fairseq transformer, converted", [src, tgt],
            [*_use(config, generation), *_differences(config, generation)])


def _use(config: dict, generation: dict) -> list[str]:
    src = config["langs"][0]
    lines = ["## Use", "", "Native port (no fairseq needed; reads fairseq's settings from `generation_config.json`):", "",
             "```", f"porting translate --model THIS_DIR < input.{src}", "```", ""]
    p = config["porting"]
    if not p["transformers_compatible"]:
        return lines + ["transformers' FSMT cannot run this model faithfully:", "",
                        *[f"- {why}" for why in p["transformers_incompatibilities"]], ""]
    settings = ", ".join(f"{k}={v!r}" for k, v in model_card.transformers_generation(generation["fairseq"])["settings"].items())
    return lines + [
        "transformers, with the settings closest to fairseq's (they are also in `generation_config.json`):", "",
        "```python", "from transformers import FSMTForConditionalGeneration, FSMTTokenizer", "",
        "tok = FSMTTokenizer.from_pretrained(THIS_DIR)",
        "model = FSMTForConditionalGeneration.from_pretrained(THIS_DIR)",
        'batch = tok(["a sentence to translate"], return_tensors="pt")',
        f"out = model.generate(**batch, {settings})",
        "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]


def _differences(config: dict, generation: dict) -> list[str]:
    """Why transformers' output can differ from fairseq's (and from the native port's)."""
    p = config["porting"]
    lines = ["## Where transformers' output can differ from fairseq's", "",
             "- FSMTTokenizer always normalises punctuation (Moses' normaliser) before tokenizing; fairseq's "
             "hub interface does not, so lines with quotes, dashes or odd spacing can tokenize differently.",
             "- `max_length` counts the decoder's start token and the final `</s>`: fairseq's `max_len_b` "
             f"{generation['fairseq']['max_len_b']} is `max_length={generation['fairseq']['max_len_b'] + 2}`; "
             "the same number in both is off by two."]
    lines += [f"- not expressible in transformers: {why}"
              for why in model_card.transformers_generation(generation["fairseq"])["not_expressible"]]
    if config["tie_word_embeddings"] and not p["architecture"]["share_all_embeddings"]:
        lines.append("- transformers logs a warning that the encoder and decoder embeddings differ and suggests "
                     "`tie_word_embeddings=False`: expected with separate source and target dictionaries, and the "
                     "advice is wrong here (with `False` the output projection, stored once as the decoder's "
                     "embedding, would be left uninitialised).")
    if len(p["ensemble"]) > 1:
        lines.append(f"- this is an ensemble of {len(p['ensemble'])} checkpoints: transformers loads only the first "
                     "(`model.safetensors`); the native port runs them all (`--model` once, members from `ensemble/`).")
    return lines + [""]
