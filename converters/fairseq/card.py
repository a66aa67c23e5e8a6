"""The small text files of a converted directory: config, tokenizer and generation settings, model card."""
from __future__ import annotations

import json

from converters.fairseq.arch import Architecture
from porting.format import LanguageTokens, vocab_sizes

# FSMTConfig declares these generation settings itself (defaults 5, 1.0, False, 200): a config.json
# left at those would contradict generation_config.json for whoever reads the model's config
# (GenerationConfig.from_model_config); the converter writes the same values into both
FSMT_GENERATION_FIELDS = ("num_beams", "length_penalty", "early_stopping", "max_length")


def fsmt_generation_fields(generation: dict) -> dict:
    """FSMTConfig's generation fields, from transformers' settings (transformers_generation's)."""
    return {k: generation[k] for k in FSMT_GENERATION_FIELDS}


def with_generation(model_config: dict, generation: dict) -> dict | None:
    """A config.json whose class declares generation fields of its own (FSMT's) with them set to
    transformers' settings (as generation_config.json is rewritten); None for a class without any
    (M2M100: transformers 5 keeps none in the model's config)."""
    if model_config.get("model_type") != "fsmt":
        return None
    return {**{k: v for k, v in model_config.items() if k != "transformers_version"}, **fsmt_generation_fields(generation)}


def fsmt_config(arch: Architecture, src: str, tgt: str, src_vocab: int, tgt_vocab: int, dtype: str,
                generation: dict) -> dict:
    """transformers' FSMTConfig fields, filled from fairseq's options (generation: transformers'
    settings, as generation_config.json holds them)."""
    return {
        "architectures": ["FSMTForConditionalGeneration"],
        "model_type": "fsmt",
        "langs": [src, tgt],
        "src_vocab_size": src_vocab,
        "tgt_vocab_size": tgt_vocab,
        "activation_function": arch.activation_fn,
        "d_model": arch.embed_dim,
        **fsmt_generation_fields(generation),
        "max_position_embeddings": arch.max_source_positions,
        "encoder_ffn_dim": arch.encoder_ffn_embed_dim,
        "encoder_layers": arch.encoder_layers,
        "encoder_attention_heads": arch.encoder_attention_heads,
        "encoder_layerdrop": 0.0,
        "decoder_ffn_dim": arch.decoder_ffn_embed_dim,
        "decoder_layers": arch.decoder_layers,
        "decoder_attention_heads": arch.decoder_attention_heads,
        "decoder_layerdrop": 0.0,
        "attention_dropout": arch.attention_dropout,
        "dropout": arch.dropout,
        "activation_dropout": arch.activation_dropout,
        "init_std": 0.02,
        # fairseq's decoder starts from </s>; without this transformers starts from <s> (garbage out)
        "decoder_start_token_id": 2,
        "is_encoder_decoder": True,
        "scale_embedding": not arch.no_scale_embedding,
        # transformers ties FSMT's embeddings only when this is true, and then all three of them;
        # see converters/README.md "Ties" for the separate-dictionary case.
        "tie_word_embeddings": arch.share_decoder_input_output_embed,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "forced_eos_token_id": 2,
        "dtype": dtype,                       # transformers >= 4.56's name (torch_dtype before)
    }


def shared_embedding_config(arch: Architecture, vocab_size: int, dtype: str) -> dict:
    """The fields M2M100Config and BartConfig share (one vocabulary, one shared embedding, fairseq's
    specials), filled from fairseq's options; each family adds its class's name and its own."""
    return {
        "vocab_size": vocab_size,
        "d_model": arch.embed_dim,
        "encoder_layers": arch.encoder_layers,
        "decoder_layers": arch.decoder_layers,
        "encoder_attention_heads": arch.encoder_attention_heads,
        "decoder_attention_heads": arch.decoder_attention_heads,
        "encoder_ffn_dim": arch.encoder_ffn_embed_dim,
        "decoder_ffn_dim": arch.decoder_ffn_embed_dim,
        "activation_function": arch.activation_fn,
        "max_position_embeddings": arch.max_source_positions,
        "scale_embedding": not arch.no_scale_embedding,
        "dropout": arch.dropout,
        "attention_dropout": arch.attention_dropout,
        "activation_dropout": arch.activation_dropout,
        "encoder_layerdrop": 0.0,
        "decoder_layerdrop": 0.0,
        "init_std": 0.02,
        "is_encoder_decoder": True,
        "decoder_start_token_id": 2,          # fairseq's decoder starts from </s>
        "tie_word_embeddings": True,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "dtype": dtype,
    }


def m2m100_config(arch: Architecture, vocab_size: int, dtype: str) -> dict:
    """transformers' M2M100Config fields, filled from fairseq's options (the multilingual family)."""
    return {"architectures": ["M2M100ForConditionalGeneration"], "model_type": "m2m_100",
            **shared_embedding_config(arch, vocab_size, dtype)}


def m2m100_language_codes(tokens: LanguageTokens, vocab_size: int) -> str | None:
    """The name of the language list transformers' M2M100Tokenizer can map these tokens with, or
    None. It assumes one of its fixed lists (``language_codes``), its tokens in that order right
    after the vocabulary: exactly what fairseq gives a model trained with that --langs. None too
    where transformers is not installed (its lists cannot be compared)."""
    try:
        from transformers.models.m2m_100.tokenization_m2m_100 import FAIRSEQ_LANGUAGE_CODES
    except ImportError:
        return None

    for name, codes in FAIRSEQ_LANGUAGE_CODES.items():
        if list(tokens.langs) == list(codes) and all(tokens.ids[c] == vocab_size + i for i, c in enumerate(codes)):
            return name
    return None


def m2m100_incompatibilities(arch: Architecture, tokens: LanguageTokens, tokenizer_problems: list[str]) -> list[str]:
    """What transformers' M2M100 classes cannot express (the native port runs it all).
    tokenizer_problems: what the tokenizer class cannot (m2m100_tokenizer_problems, or NLLB's)."""
    out = []
    if not (arch.encoder_normalize_before and arch.decoder_normalize_before and arch.decoder_final_norm):
        out.append("post-norm layers: M2M100 is pre-norm with a final layer norm on both sides")
    if arch.layernorm_embedding:
        out.append("layernorm_embedding: M2M100 has no embedding layer norm")
    if arch.encoder_learned_pos or arch.decoder_learned_pos:
        out.append("learned positional embeddings: M2M100's are sinusoidal")
    if arch.max_source_positions != arch.max_target_positions:
        out.append("max_source_positions != max_target_positions: M2M100 has one max_position_embeddings")
    if not arch.share_all_embeddings:
        out.append("separate encoder and decoder embeddings: M2M100 shares one embedding")
    if (tokens.style, tokens.encoder_langtok, tokens.decoder_langtok, tokens.replacing_bos_eos) != \
            ("multilingual", "src", True, False):
        out.append(f"language tokens style={tokens.style}, encoder_langtok={tokens.encoder_langtok}, "
                   f"decoder_langtok={tokens.decoder_langtok}, replacing_bos_eos={tokens.replacing_bos_eos}: "
                   "M2M100Tokenizer and NllbTokenizer put the source's token first in the source and force the "
                   "target's first in the output (multilingual, src, true, false) only")
    else:
        out += tokenizer_problems
    return out


def m2m100_tokenizer_problems(tokens: LanguageTokens, vocab_size: int) -> list[str]:
    """Why M2M100Tokenizer cannot map this model's language tokens."""
    if transformers_version() is None:
        return ["language list: transformers is not installed here, so M2M100Tokenizer's fixed language "
                "lists could not be compared with this model's"]
    if m2m100_language_codes(tokens, vocab_size) is None:
        return ["language list: M2M100Tokenizer maps language tokens only for M2M-100's own lists "
                "(language_codes m2m100 or wmt21, in that order, right after the vocabulary); this model's "
                f"--langs are {', '.join(tokens.langs[:6])}{' ...' if len(tokens.langs) > 6 else ''}"]
    return []


def m2m100_tokenizer_config(tokens: LanguageTokens, arch: Architecture, vocab_size: int) -> dict:
    """M2M100Tokenizer's settings; its default direction is the model's first trained pair."""
    src, tgt = tokens.default_direction()
    codes = m2m100_language_codes(tokens, vocab_size)    # None: M2M-100's own releases' setting
    return {"tokenizer_class": "M2M100Tokenizer", "src_lang": src, "tgt_lang": tgt,
            "language_codes": codes or "m2m100", "num_madeup_words": 0,
            # transformers 5's M2M100Tokenizer registers its language tokens as special only when they
            # are listed here; otherwise decode(skip_special_tokens=True) leaves "__fr__" in the text
            "extra_special_tokens": [tokens.token(lang) for lang in tokens.langs],
            "model_max_length": arch.max_source_positions,
            "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def tokenizer_config(src: str, tgt: str, arch: Architecture) -> dict:
    return {"tokenizer_class": "FSMTTokenizer", "langs": [src, tgt],
            "model_max_length": arch.max_source_positions, "do_lower_case": False}


# fairseq's early_stopping (porting/generation/options.py) -> transformers' closest rule. fairseq's
# own rule ("a sentence is done once `beam` hypotheses ended") is transformers' early_stopping=True.
TRANSFORMERS_EARLY_STOPPING = {"fairseq": True, "true": True, "false": False, "never": "never"}


def transformers_generation(fairseq: dict) -> dict:
    """transformers' generate() settings closest to fairseq's options, and what they cannot say.

    max_length counts the decoder's start token and the final </s>, fairseq's max_len_b neither:
    fairseq decodes up to max_len_b tokens and then </s>, which is max_length = max_len_b + 2.
    """
    mapped = {"num_beams": fairseq["beam"], "length_penalty": fairseq["lenpen"],
              "early_stopping": TRANSFORMERS_EARLY_STOPPING[fairseq["early_stopping"]],
              "max_length": fairseq["max_len_b"] + 2}
    if fairseq["nbest"] > 1:
        mapped["num_return_sequences"] = fairseq["nbest"]
    if fairseq["no_repeat_ngram_size"]:
        mapped["no_repeat_ngram_size"] = fairseq["no_repeat_ngram_size"]
    # fairseq forbids </s> while fewer than min_len tokens are out (so min_len=1 forbids an empty
    # output); transformers counts the start token in min_length
    mapped["min_length"] = fairseq["min_len"] + 1
    not_expressible = []
    if fairseq["max_len_a"]:
        not_expressible.append(f"max_len_a={fairseq['max_len_a']} (a cap growing with the source length)")
    if fairseq["unkpen"]:
        not_expressible.append(f"unkpen={fairseq['unkpen']}")
    if fairseq["early_stopping"] == "fairseq":
        not_expressible.append("fairseq's stopping rule keeps the first `beam` ended hypotheses; "
                               "early_stopping=True keeps the best ones (they can differ)")
    return {"settings": mapped, "not_expressible": not_expressible}


def fairseq_generation(settings: dict, defaults: dict) -> tuple[dict, list[str], list[str]]:
    """transformers' generation settings (a hub directory's generation_config.json) back to fairseq's
    options, the inverse of transformers_generation; returns (options, what was read from where, what
    could not be read). Absent keys keep fairseq's defaults; fairseq's own stopping rule stays (the
    model is fairseq's)."""
    out, notes, problems = dict(defaults), [], []

    def take(key: str, option: str, convert, number=int) -> None:
        value = settings.get(key)
        if value is None:
            return
        if type(value) not in ((int,) if number is int else (int, float)) or value != value or abs(value) == float("inf"):
            problems.append(f"{key} is {value!r}, not a {'whole number' if number is int else 'number'}")
            return
        out[option] = convert(value)
        notes.append(f"{option}={out[option]} from {key}={value}")
    take("num_beams", "beam", int)
    take("length_penalty", "lenpen", float, float)
    take("max_length", "max_len_b", lambda v: max(1, v - 2))        # the start token and </s> counted there
    take("min_length", "min_len", lambda v: max(1, v - 1))
    take("no_repeat_ngram_size", "no_repeat_ngram_size", int)
    take("num_return_sequences", "nbest", int)
    if not problems:
        from porting.generation.options import GenerationOptions

        out["nbest"] = min(out["nbest"], out["beam"])
        try:
            GenerationOptions(**{k: v for k, v in out.items() if k in GenerationOptions.__dataclass_fields__})
        except (ValueError, TypeError) as e:
            problems.append(str(e))
    return out, notes, problems


# the generation settings a family's config.json can set other than fairseq's </s> (mBART's target language token)
END_TOKEN_FIELDS = ("decoder_start_token_id", "eos_token_id", "forced_eos_token_id")


def generation_config(fairseq: dict) -> dict:
    """transformers' GenerationConfig keys (closest to fairseq) plus fairseq's own, which the native
    port reads (the ``fairseq`` section)."""
    return {**transformers_generation(fairseq)["settings"],
            "decoder_start_token_id": 2, "bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2,
            "forced_eos_token_id": 2, "fairseq": dict(fairseq)}


def transformers_version() -> str | None:
    """The transformers that writes config.json and generation_config.json (None: not installed)."""
    try:
        import transformers
    except ImportError:
        return None
    return transformers.__version__


def as_transformers_writes(kind: str, fields: dict) -> str:
    """The JSON text transformers' save_pretrained writes for these fields (kind "fsmt": FSMTConfig;
    "m2m_100": M2M100Config; "bart": BartConfig; "mbart": MBartConfig; "generation": GenerationConfig): its
    own classes add transformers_version and drop what equals their defaults. Without transformers, the
    same layout (sorted keys, two-space indent) of the fields."""
    try:
        from transformers import BartConfig, FSMTConfig, GenerationConfig, M2M100Config, MBartConfig
    except ImportError:
        return json.dumps(fields, indent=2, sort_keys=True) + "\n"
    made = {"fsmt": FSMTConfig, "m2m_100": M2M100Config, "bart": BartConfig, "mbart": MBartConfig,
            "generation": GenerationConfig}[kind](**fields)
    return made.to_json_string(use_diff=True)


def readme(config: dict, provenance: dict, title: str, languages: list[str], sections: list[str],
           license: str | None = None, pipeline_tag: str = "translation") -> str:
    """The model card, through huggingface_hub's ModelCard (its metadata block is what the hub reads):
    the family's title, languages and sections (how to use it, where transformers differs:
    converters/fairseq/families/) around what every conversion shares."""
    from huggingface_hub import ModelCard, ModelCardData

    data = ModelCardData(language=languages, license=license, library_name="transformers", pipeline_tag=pipeline_tag,
                         tags=[pipeline_tag, "fairseq", config["model_type"]])
    body = [title, "",
            f"Converted from fairseq by {provenance['converter']['name']} {provenance['converter']['version']}.", "",
            *_architecture(config, provenance), *sections]
    if not license:
        body += ["## License", "", "Not stated at conversion (fairseq checkpoints do not record one): "
                 "the original model's license applies; convert with `--license` to state it here.", ""]
    body += ["## Provenance", "", "Source files, relative to the data directory (sha256):", ""]
    body += [f"- `{path}`: `{digest}`" for path, digest in provenance["sources"].items()]
    body += ["", "Every dropped key, with its reason, is listed in `provenance.json`.", ""]
    return str(ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body)))


def _architecture(config: dict, provenance: dict) -> list[str]:
    p = config["porting"]
    arch = p["architecture"]
    return [
        "## Architecture", "",
        f"- {arch['arch']}: {arch['encoder_layers']} encoder / {arch['decoder_layers']} decoder layers, "
        f"d={arch['embed_dim']}, ffn {arch['encoder_ffn_embed_dim']}/{arch['decoder_ffn_embed_dim']}, "
        f"heads {arch['encoder_attention_heads']}/{arch['decoder_attention_heads']}, activation {arch['activation_fn']}",
        f"- {'pre' if arch['encoder_normalize_before'] else 'post'}-norm encoder, "
        f"{'pre' if arch['decoder_normalize_before'] else 'post'}-norm decoder; "
        f"{'learned' if arch['encoder_learned_pos'] else 'sinusoidal'} positions; "
        f"embedding scale {'off' if arch['no_scale_embedding'] else 'sqrt(d)'}; "
        f"layernorm_embedding {'on' if arch['layernorm_embedding'] else 'off'}",
        f"- vocabularies: {vocab_sizes(config)[0]} source / {vocab_sizes(config)[1]} target symbols; "
        f"ties: {json.dumps(p['ties']) if p['ties'] else 'none'}",
        f"- dtype {p['dtype']}; ensemble members: {', '.join(provenance['members'])}", ""]
