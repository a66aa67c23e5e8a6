"""The mBART family (``--task translation_from_pretrained_bart``, ``--arch mbart_*``: mbart.cc25 fine-tuned
for one direction, as its en-ro model was): one dictionary (``dict.<lang>.txt``, the same file on both
sides) to which the task appends a ``[xx_YY]`` token per language of ``--langs`` and ``<mask>``; a
SentencePiece model (``sentence.bpe.model``: a unigram model despite its name, fairseq #2359); written as
transformers' MBart.

fairseq's task, as its source says (tasks/translation_from_pretrained_bart.py):
  * the source is its pieces, </s>, then the source language's token (append_source_id);
  * the generator's eos is the *target language's token*: the decoder starts from it and a hypothesis
    ends with it; </s> is an ordinary token then (a hypothesis can hold it anywhere, or end without it
    at the length cap).

transformers' MBartTokenizer assumes every SentencePiece piece at its SentencePiece id + 1 and the
language tokens in mbart.cc25's 25-code order after them: true of mbart.cc25's dictionary, false of one
fairseq-preprocess built in frequency order. The port maps pieces by their strings (vocab.json); what
MBartTokenizer cannot express is recorded, as for NLLB.
"""
from __future__ import annotations

from converters.fairseq import card as model_card
from converters.fairseq.families import bart, bilingual, multilingual
from converters.fairseq.job import Job
from converters.fairseq.multilingual import piece_share
from porting.files import json_text
from porting.format import LANG_TOK_STYLES, MBART, SENTENCEPIECE_FILE, SHARED_VOCAB_FILE

NAME = MBART
TASK = "translation_from_pretrained_bart"
TASKS = (TASK,)
ARCHS = ("mbart_", "bart_")          # the task decides: mBART is fine-tuned on BART's architectures
MODEL_TYPE = "mbart"
CONFIG_CLASS = "MBartConfig"
ONE_DICTIONARY = True
ROWS = "4 specials + entries + the task's language tokens and <mask>"
STORES_DERIVED = False              # learned positions: every table is in the checkpoint
PIPELINE_TAG = "translation"
GENERATION_FIELDS: dict = {}        # the target language's token: written by transformers_config
MASK = "<mask>"


def token(lang: str) -> str:
    return LANG_TOK_STYLES["mbart"].format(lang)


def check_members(job: Job) -> None:
    """As the bilingual family (the members agree on languages, the task's suffixes), and the task's --langs."""
    bilingual.check_members(job)
    langs = [m.task.get("langs") for m in job.members]
    if not langs[0]:
        job.problems.append(f"{job.members[0].path}: {TASK} records no --langs (the language tokens it appends)")
        return
    if len(set(langs)) > 1:
        job.problems.append(f"ensemble members disagree on {TASK}'s --langs")
    job.mbart_langs = tuple(str(langs[0]).split(","))
    for flag, lang in (("--source-lang", job.source_lang), ("--target-lang", job.target_lang)):
        if lang and lang not in job.mbart_langs:
            job.problems.append(f"{flag} {lang}: not one of the task's --langs ({', '.join(job.mbart_langs)}): "
                                f"it has no {token(lang)} token")


def gather(job: Job) -> None:
    """The dictionaries (one file per side, as the task reads them), with the tokens the task appends,
    and the SentencePiece model."""
    bilingual.gather_dictionaries(job)
    for d in job.dicts.values():                     # the same file twice: appended to each, as the task does
        _append_task_tokens(job, d)
    multilingual.gather_sentencepiece(job)


def _append_task_tokens(job: Job, d) -> None:
    """TranslationFromPretrainedBARTTask.__init__: add_symbol for each [lang], then <mask>. add_symbol
    gives a symbol already present its old id: a dictionary holding them already keeps them where they are."""
    for symbol in [*(token(lang) for lang in job.mbart_langs), MASK]:
        if symbol not in d.indices:
            d.indices[symbol] = len(d.symbols)
            d.symbols.append(symbol)
            d.counts.append(1)


def check_vocabularies(job: Job) -> None:
    """vocab.json: every symbol at its id (the language tokens and <mask> too: the tokenizer finds its
    direction's tokens there); a SentencePiece model whose pieces the dictionary mostly lacks is another model's."""
    if job.sentencepiece is not None:
        try:
            fit = piece_share(job.sentencepiece, job.dicts["src"])
        except (RuntimeError, OSError) as e:
            job.problems.append(f"{job.sentencepiece}: not a SentencePiece model ({str(e).strip() or type(e).__name__})")
        else:
            if problem := fit.problem(job.sentencepiece.name, job.dict_name("src")):
                job.problems.append(problem)
    job.vocabs = {"shared": {s: i for i, s in enumerate(job.dicts["src"].symbols)}}


def mbart_config(job: Job) -> dict:
    """transformers' MBartConfig fields, filled from fairseq's options. The generator's eos is the target
    language's token: it starts the decoder and ends the search (decoder_start_token_id, eos_token_id,
    forced_eos_token_id at the length cap), as fairseq's generator does with it."""
    tgt = job.vocabs["shared"][token(job.target_lang)]
    return {"architectures": ["MBartForConditionalGeneration"], "model_type": "mbart",
            "langs": [job.source_lang, job.target_lang],
            **model_card.shared_embedding_config(job.members[0].arch, len(job.dicts["src"]), job.dtype),
            "decoder_start_token_id": tgt, "eos_token_id": tgt, "forced_eos_token_id": tgt}


def incompatibilities(job: Job) -> list[str]:
    """What transformers' MBart cannot express (the native port runs it all)."""
    arch, out = job.members[0].arch, []
    if not (arch.encoder_normalize_before and arch.decoder_normalize_before and arch.decoder_final_norm):
        out.append("post-norm layers: MBart is pre-norm, with final layer norms (Bart is post-norm)")
    out += [why for why in bart.incompatibilities(job) if not why.startswith("pre-norm")]
    return out


def transformers_config(job: Job, tokenizer_problems: list[str]) -> tuple[dict, list[str]]:
    return mbart_config(job), incompatibilities(job) + tokenizer_problems


def config_section(job: Job) -> dict:
    return {"mbart": {"langs": list(job.mbart_langs)}}


def tokenizer_problems(job: Job) -> list[str]:
    """Where MBartTokenizer's fixed layout (piece at SentencePiece id + 1, then mbart.cc25's 25 codes, then
    <mask>) differs from the dictionary's, the first differences named."""
    import sentencepiece
    from transformers.models.mbart.tokenization_mbart import FAIRSEQ_LANGUAGE_CODES

    sp = sentencepiece.SentencePieceProcessor(model_file=str(job.sentencepiece))
    symbols = job.dicts["src"].symbols
    expected = [*symbols[:4], *(sp.id_to_piece(i) for i in range(3, sp.get_piece_size())),
                *(token(lang) for lang in FAIRSEQ_LANGUAGE_CODES), MASK]
    moved = [f"{s!r} at {i} (MBartTokenizer: {expected[i]!r})" if i < len(expected) else f"{s!r} at {i}"
             for i, s in enumerate(symbols) if i >= len(expected) or expected[i] != s]
    if not moved and len(symbols) == len(expected):
        return []
    return [f"MBartTokenizer puts every SentencePiece piece at its id + 1, then mbart.cc25's 25 language codes and "
            f"<mask>; {job.dict_name('src')} with the task's tokens differs at {len(moved) or 'its end'} ids "
            f"(e.g. {', '.join(moved[:3])}): use the native port's tokenizer (vocab.json maps pieces by their strings)"]


def tokenizer_files(job: Job) -> tuple[dict[str, str], dict[str, bytes], list[str]]:
    """vocab.json (the port's), the SentencePiece model under the name MBartTokenizer reads, and its settings."""
    arch = job.members[0].arch
    texts = {SHARED_VOCAB_FILE: json_text(job.vocabs["shared"]),
             "tokenizer_config.json": json_text({
                 "tokenizer_class": "MBartTokenizer", "model_max_length": arch.max_source_positions,
                 "src_lang": job.source_lang, "tgt_lang": job.target_lang, "bos_token": "<s>", "eos_token": "</s>",
                 "sep_token": "</s>", "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>",
                 "mask_token": MASK})}
    return texts, {SENTENCEPIECE_FILE: job.sentencepiece.read_bytes()}, tokenizer_problems(job)


def card(config: dict, generation: dict) -> tuple[str, list[str], list[str]]:
    """The model card's (title, languages, sections)."""
    src, tgt = config["langs"]
    return (f"# mBART ({config['porting']['architecture']['arch']}) fine-tuned {src}→{tgt}, converted",
            [src.split("_")[0], tgt.split("_")[0]], [*_use(config, generation), *_differences(config, generation)])


def _use(config: dict, generation: dict) -> list[str]:
    src, tgt = config["langs"]
    lines = ["## Use", "", "Native port (no fairseq needed; reads fairseq's settings from `generation_config.json`):", "",
             "```", f"porting translate --model THIS_DIR < input.{src}", "```", ""]
    p = config["porting"]
    if not p["transformers_compatible"]:
        return lines + ["transformers' MBart cannot run this model exactly as fairseq does:", "",
                        *[f"- {why}" for why in p["transformers_incompatibilities"]], ""]
    settings = ", ".join(f"{k}={v!r}" for k, v in model_card.transformers_generation(generation["fairseq"])["settings"].items())
    return lines + [
        f"transformers (`generation_config.json` starts the decoder from `[{tgt}]` and ends on it, as fairseq's "
        "generator does):", "",
        "```python", "from transformers import MBartForConditionalGeneration, MBartTokenizer", "",
        f'tok = MBartTokenizer.from_pretrained(THIS_DIR, src_lang="{src}", tgt_lang="{tgt}")',
        "model = MBartForConditionalGeneration.from_pretrained(THIS_DIR)",
        'batch = tok(["a sentence to translate"], return_tensors="pt")',
        f"out = model.generate(**batch, {settings})",
        "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]


def _differences(config: dict, generation: dict) -> list[str]:
    tgt = config["langs"][1]
    lines = ["## Where transformers' output can differ from fairseq's", "",
             f"- fairseq's generator ends on `[{tgt}]`, not `</s>`; this directory's `eos_token_id` says so. A "
             f"directory whose generation ends on `</s>` (transformers' mBART default) runs on past `</s>` "
             "differently: keep these settings.",
             "- `max_length` counts the decoder's start token and the final token: fairseq's `max_len_b` "
             f"{generation['fairseq']['max_len_b']} is `max_length={generation['fairseq']['max_len_b'] + 2}`.",
             "- MBartTokenizer decodes through SentencePiece (`<unk>` becomes ` ⁇ `); fairseq joins the pieces and "
             "replaces `▁` by spaces (`<unk>` stays `<unk>`)."]
    lines += [f"- not expressible in transformers: {why}"
              for why in model_card.transformers_generation(generation["fairseq"])["not_expressible"]]
    return lines + [""]
