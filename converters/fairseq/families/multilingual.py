"""The multilingual fairseq transformer (``--task translation_multi_simple_epoch``: M2M-100, NLLB-200):
one dictionary with the task's language tokens, a SentencePiece model; written as transformers'
M2M100, with NllbTokenizer's files where the codes are NLLB-200's (converters/fairseq/nllb.py).
What fairseq's task does with its options is read in converters/fairseq/multilingual.py."""
from __future__ import annotations

from converters.fairseq import card as model_card
from converters.fairseq import multilingual as task_options
from converters.fairseq import nllb
from converters.fairseq.dictionary import DictionaryError, read_dictionary
from converters.fairseq.job import Job
from porting.files import json_text
from porting.format import MULTILINGUAL, SENTENCEPIECE_FILE, LanguageTokens

NAME = MULTILINGUAL
TASKS = (task_options.TASK,)
ARCHS = ("transformer",)
MODEL_TYPE = "m2m_100"                 # transformers' model_type (config.json)
CONFIG_CLASS = "M2M100Config"
ONE_DICTIONARY = True
ROWS = "4 specials + entries + the task's language tokens"
STORES_DERIVED = False      # M2M-100 builds its sinusoidal table itself: stored, it would be an unexpected key
PIPELINE_TAG = "translation"
GENERATION_FIELDS: dict = {}


def check_members(job: Job) -> None:
    """The task's language options (one task for every member); the direction is chosen when translating."""
    first = job.members[0]
    job.task = task_options.read_task(first.task, job.data_dir, job.problems, str(first.path), job.lang_tok_style)
    for flag, lang in (("--source-lang", job.source_lang), ("--target-lang", job.target_lang)):
        if lang:
            job.problems.append(f"{flag} {lang}: a multilingual model ({task_options.TASK}) is converted for all "
                                "its languages; choose the direction when translating")
    for m in job.members[1:]:
        other = task_options.read_task(m.task, job.data_dir, [], str(m.path), job.lang_tok_style)
        if other != job.task:
            job.problems.append(f"{m.path}: its task's language options differ from {first.path}'s")
        if m.arch != first.arch:
            job.problems.append(f"{m.path}: architecture differs from {first.path}")


def gather(job: Job) -> None:
    """The one shared dictionary (with the task's language tokens, as fairseq adds them) and the
    SentencePiece model."""
    found = task_options.find_dictionary(job.data_dir, job.dict_file)
    if isinstance(found, str):
        job.problems.append(found)
    else:
        job.dict_file = found
        job.dict_names = {"src": found.name, "tgt": found.name}
        try:
            d = read_dictionary(found)
        except DictionaryError as e:
            job.problems.append(str(e))
        except (OSError, UnicodeDecodeError) as e:
            job.problems.append(f"{found}: not a readable UTF-8 dictionary ({e})")
        else:
            if not job.task.readable():
                pass                                   # the style or placement is wrong: reported already
            elif problems := task_options.augment(d, job.task):
                job.problems += [f"{found}: {p}" for p in problems]
            else:
                job.dicts = {"src": d, "tgt": d}
                job.lang_tokens = task_options.language_tokens(d, job.task)
        job.data_files.append(found)
    gather_sentencepiece(job)


def gather_sentencepiece(job: Job) -> None:
    """The SentencePiece model (--sentencepiece, or the one *.model in the data directory) into job.sentencepiece."""
    spm = task_options.find_sentencepiece(job.data_dir, job.sentencepiece)
    if isinstance(spm, str):
        job.problems.append(spm)
        job.sentencepiece = None
        return
    job.sentencepiece = spm
    job.data_files.append(spm)


def check_vocabularies(job: Job) -> None:
    """vocab.json: the dictionary without the language tokens (their ids live in config.json); and
    every SentencePiece piece the dictionary lacks becomes <unk>: a model whose dictionary lacks many
    is the wrong pair of files."""
    _check_pieces(job)
    tokens = {job.lang_tokens.token(lang) for lang in job.lang_tokens.langs}
    job.vocabs = {"shared": {s: i for i, s in enumerate(job.dicts["src"].symbols) if s not in tokens}}


def _check_pieces(job: Job) -> None:
    if job.sentencepiece is None:
        return
    try:
        fit = task_options.piece_share(job.sentencepiece, job.dicts["src"])
    except (RuntimeError, OSError) as e:
        job.problems.append(f"{job.sentencepiece}: not a SentencePiece model ({str(e).strip() or type(e).__name__})")
        return
    if problem := fit.problem(job.sentencepiece.name, job.dict_name("src")):
        job.problems.append(problem)


def transformers_config(job: Job, tokenizer_problems: list[str]) -> tuple[dict, list[str]]:
    arch = job.members[0].arch
    return (model_card.m2m100_config(arch, len(job.dicts["src"]), job.dtype),
            model_card.m2m100_incompatibilities(arch, job.lang_tokens, tokenizer_problems))


def config_section(job: Job) -> dict:
    return {"multilingual": job.lang_tokens.to_dict()}


def tokenizer_files(job: Job) -> tuple[dict[str, str], dict[str, bytes], list[str]]:
    """One vocabulary (the native port reads it) and NllbTokenizer's files where the codes are NLLB-200's
    and it can express the model, else M2M100Tokenizer's config; the SentencePiece model as bytes, under
    the name transformers' tokenizers look for."""
    first = job.members[0]
    texts = {"vocab.json": json_text(job.vocabs["shared"])}
    blobs = {SENTENCEPIECE_FILE: job.sentencepiece.read_bytes()}
    if nllb.nllb_coded(job.lang_tokens):
        symbols = job.dicts["src"].symbols
        if not (problems := nllb.tokenizer_problems(job.sentencepiece, symbols, job.lang_tokens)):
            return {**texts, **nllb.tokenizer_files(job.sentencepiece, symbols, job.lang_tokens,
                                                    first.arch.max_source_positions)}, blobs, []
    else:
        problems = model_card.m2m100_tokenizer_problems(job.lang_tokens, len(job.vocabs["shared"]))
    texts["tokenizer_config.json"] = json_text(
        model_card.m2m100_tokenizer_config(job.lang_tokens, first.arch, len(job.vocabs["shared"])))
    return texts, blobs, problems


def card(config: dict, generation: dict) -> tuple[str, list[str], list[str]]:
    """The model card's (title, languages, sections): the trained directions, how to run it, where
    transformers' M2M100 (and NllbTokenizer) differ."""
    multi = config["porting"]["multilingual"]
    languages = list(dict.fromkeys(lang for pair in multi["lang_pairs"] for lang in pair.split("-"))) or multi["langs"]
    title = (f"# Multilingual fairseq transformer ({', '.join(multi['lang_pairs']) or 'directions not recorded'}; "
             f"{len(multi['langs'])} language tokens), converted")
    return title, languages, [*_use(config, generation), *_differences(config, generation)]


def _use(config: dict, generation: dict) -> list[str]:
    multi = LanguageTokens.from_dict(config["porting"]["multilingual"])
    src, tgt = multi.default_direction()
    lines = ["## Use", "", f"It was {multi.trained()}. Native port (no fairseq needed):", "",
             "```", f"porting translate --model THIS_DIR --source-lang {src} --target-lang {tgt} < input.{src}", "```", ""]
    p = config["porting"]
    if not p["transformers_compatible"]:
        return lines + ["transformers' M2M100 classes cannot run this model faithfully:", "",
                        *[f"- {why}" for why in p["transformers_incompatibilities"]], ""]
    settings = ", ".join(f"{k}={v!r}" for k, v in model_card.transformers_generation(generation["fairseq"])["settings"].items())
    tokenizer, lang_id = (("NllbTokenizer", f'tok.convert_tokens_to_ids("{tgt}")') if nllb.nllb_coded(multi)
                          else ("M2M100Tokenizer", f'tok.get_lang_id("{tgt}")'))
    return lines + [
        "transformers: the target language is the token forced first, `forced_bos_token_id` "
        f"(for {tgt}: `{lang_id}`, id {multi.ids[tgt]}); the other settings are the closest "
        "to fairseq's (also in `generation_config.json`):", "",
        "```python", f"from transformers import M2M100ForConditionalGeneration, {tokenizer}", "",
        f'tok = {tokenizer}.from_pretrained(THIS_DIR, src_lang="{src}")',
        "model = M2M100ForConditionalGeneration.from_pretrained(THIS_DIR)",
        'batch = tok(["a sentence to translate"], return_tensors="pt")',
        f'out = model.generate(**batch, forced_bos_token_id={lang_id}, {settings})',
        "print(tok.batch_decode(out, skip_special_tokens=True))", "```", ""]


def _differences(config: dict, generation: dict) -> list[str]:
    lines = ["## Where transformers' output can differ from fairseq's", "",
             "- fairseq forces the target language token with its own log-prob, which counts in the hypothesis' "
             "score; transformers' `forced_bos_token_id` gives it 0. Scores differ by that log-prob, and with a "
             "length penalty other than 1 hypotheses can rank differently.",
             *(_nllb_differences(config) if nllb.nllb_coded(LanguageTokens.from_dict(config["porting"]["multilingual"]))
               else ["- M2M100Tokenizer decodes through SentencePiece (`<unk>` becomes ` ⁇ `); fairseq joins the "
                     "pieces and replaces `▁` by spaces (`<unk>` stays `<unk>`)."]),
             "- `max_length` counts the decoder's start token and the final `</s>`: fairseq's `max_len_b` "
             f"{generation['fairseq']['max_len_b']} is `max_length={generation['fairseq']['max_len_b'] + 2}`."]
    lines += [f"- not expressible in transformers: {why}"
              for why in model_card.transformers_generation(generation["fairseq"])["not_expressible"]]
    if len(config["porting"]["ensemble"]) > 1:
        lines.append(f"- this is an ensemble of {len(config['porting']['ensemble'])} checkpoints: transformers loads "
                     "only the first (`model.safetensors`); the native port runs them all.")
    return lines + [""]


def _nllb_differences(config: dict) -> list[str]:
    return ["- NllbTokenizer's `decode(..., skip_special_tokens=True)` drops `<unk>` and any language code "
            "generated inside the output (special tokens there); fairseq's text keeps both.",
            "- NllbTokenizer keeps whitespace at the end of a line as a `▁` token; SentencePiece, and so fairseq, "
            "strips it: strip lines before tokenizing.",
            f"- NllbTokenizer adds `<mask>` after the vocabulary where the dictionary lacks it (id "
            f"{config['vocab_size']}, past the model's embedding): never feed it to this model."]
