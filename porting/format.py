"""The on-disk contract between the converters and the native runtime, declared once.

A converted directory's ``config.json`` carries a ``porting`` section: the architecture (``Arch``),
the special ids, the format version, the ties and the ensemble members. The converters write it
from the names here; the runtime reads it back only through ``read_config``, which checks the
format version and the special ids, so a directory this runtime cannot run is refused by name
instead of running wrong.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

# Raised whenever what a converted directory holds changes meaning; read_config refuses newer ones.
FORMAT_VERSION = 1

# The safetensors metadata keys every file we write carries (``convert fairseq`` and ``convert torch``):
# a tied tensor is stored once under its canonical name, and TIES_METADATA maps alias -> canonical.
TIES_METADATA = "porting.ties"
VERSION_METADATA = "porting.format_version"

# fairseq's Dictionary() puts these four first, in this order, before the file's entries.
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")


@dataclass(frozen=True)
class SpecialIds:
    bos: int = 0
    pad: int = 1
    eos: int = 2
    unk: int = 3

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


# The ids the port runs with. fairseq's own models always have them (the Dictionary constructor
# adds the specials first); the model's position numbering (from pad + 1) and the search's
# rules depend on them, so a directory with other ids is refused rather than remapped.
SPECIAL_IDS = SpecialIds()
BOS, PAD, EOS, UNK = SPECIAL_IDS.bos, SPECIAL_IDS.pad, SPECIAL_IDS.eos, SPECIAL_IDS.unk


class DecoderStart(NamedTuple):
    """Where a family's decoder starts and its search ends (a tokenizer's ``bos``, ``prefix``, ``end``):
    the decoder's first input token, the tokens forced as the first generated ones (fairseq's
    prefix_tokens), and the token that ends a hypothesis (fairseq's generator's eos). </s> for both ends
    and nothing forced unless a family says otherwise (a multilingual model's language token; BART's <s>;
    mBART's target language token, which starts and ends)."""
    bos: int = EOS
    prefix: tuple[int, ...] = ()
    end: int = EOS


# The longest position table the port builds (fairseq builds it too, at model construction):
# 65536 positions x 1024 dims is 256 MiB; a checkpoint asking for 10**12 would ask for terabytes.
MAX_POSITIONS = 1 << 16


class ConfigError(Exception):
    """A directory that is not a converted model this runtime can run."""


@dataclass(frozen=True)
class Arch:
    """The architecture section of a converted config.json (``porting.architecture``): every option
    that changes the math, named as fairseq names it."""
    encoder_layers: int
    decoder_layers: int
    embed_dim: int
    encoder_ffn_embed_dim: int
    decoder_ffn_embed_dim: int
    encoder_attention_heads: int
    decoder_attention_heads: int
    encoder_normalize_before: bool
    decoder_normalize_before: bool
    encoder_learned_pos: bool
    decoder_learned_pos: bool
    layernorm_embedding: bool
    no_scale_embedding: bool
    activation_fn: str
    max_source_positions: int
    max_target_positions: int
    decoder_final_norm: bool

    @classmethod
    def from_config(cls, arch: dict) -> "Arch":
        missing = [k for k in cls.__dataclass_fields__ if k not in arch]
        if missing:
            raise ConfigError(f"the architecture lacks {', '.join(missing)}")
        made = cls(**{k: arch[k] for k in cls.__dataclass_fields__})
        if problems := made.problems():
            raise ConfigError("the architecture is not one the port can run: " + "; ".join(problems))
        return made

    def problems(self) -> list[str]:
        """Every field of the wrong type or out of range, named (the converter and the loader ask)."""
        out, typed = [], set()
        for name, kind in Arch.__annotations__.items():
            value = getattr(self, name)
            expected = {"int": int, "bool": bool, "str": str}[kind]
            if isinstance(value, expected) and not (expected is int and isinstance(value, bool)):
                typed.add(name)
            else:
                out.append(f"{name} {value!r}: not {'an' if kind == 'int' else 'a'} {kind}")

        def check(names: tuple[str, ...], ok, why: str) -> None:
            if set(names) <= typed and not ok(*(getattr(self, n) for n in names)):
                out.append(f"{names[0]} {getattr(self, names[0])}: {why}")
        for name in ("encoder_layers", "decoder_layers", "embed_dim", "encoder_ffn_embed_dim", "decoder_ffn_embed_dim"):
            check((name,), lambda v: v >= 1, "at least 1")
        for side in ("encoder", "decoder"):
            check((f"{side}_attention_heads", "embed_dim"), lambda heads, dim: heads >= 1 and dim % heads == 0,
                  f"must be at least 1 and divide embed_dim {self.embed_dim}")
        for name in ("max_source_positions", "max_target_positions"):
            check((name,), lambda v: 1 <= v <= MAX_POSITIONS,
                  f"between 1 and {MAX_POSITIONS} (a position table this long is built when the model is)")
        return out


# The multilingual family's tokenizer files, under the names transformers' M2M100Tokenizer reads.
SENTENCEPIECE_FILE = "sentencepiece.bpe.model"
SHARED_VOCAB_FILE = "vocab.json"
# The bilingual family's, under the names transformers' FSMTTokenizer reads.
BILINGUAL_TOKENIZER_FILES = ("vocab-src.json", "vocab-tgt.json", "merges.txt")
# The BART family's: BartTokenizer's vocab.json (GPT-2's byte-level pieces at fairseq's ids) and merges.txt
# (GPT-2's vocab.bpe), and GPT-2's encoder.json, which names fairseq's symbols (GPT-2 ids as decimal strings).
GPT2_ENCODER_FILE, BYTE_MERGES_FILE = "encoder.json", "merges.txt"

# The families a converted directory can hold (config.json's ``porting.family``), each with the files its
# tokenizer reads (config.json besides): the one list every reader takes (the CTranslate2 export's
# tokenizer/, the fingerprints of what a result depends on).
BILINGUAL = "fairseq-transformer"             # --task translation: Moses + fastBPE, two vocabularies
MULTILINGUAL = "fairseq-multilingual"         # --task translation_multi_simple_epoch: SentencePiece, language tokens
BART = "fairseq-bart"                         # --arch bart_*: GPT-2's byte-level BPE, <s> first on both sides
MBART = "fairseq-mbart"                       # translation_from_pretrained_bart: SentencePiece, [xx_YY] tokens
FAMILY_TOKENIZER_FILES = {
    BILINGUAL: BILINGUAL_TOKENIZER_FILES,
    MULTILINGUAL: (SHARED_VOCAB_FILE, SENTENCEPIECE_FILE),
    BART: (SHARED_VOCAB_FILE, BYTE_MERGES_FILE, GPT2_ENCODER_FILE),
    MBART: (SHARED_VOCAB_FILE, SENTENCEPIECE_FILE),
}
# the families whose models fairseq runs as BARTModel: its beamable encoder attention (porting/NOTES.md)
BART_MODELS = (BART, MBART)


def family(config: dict) -> str:
    """The family a converted config.json names; a directory written before it named one (format
    version 1 without the field) is told by its multilingual section."""
    section = config["porting"]
    if "family" in section:
        return section["family"]
    return MULTILINGUAL if section.get("multilingual") is not None else BILINGUAL


def tokenizer_files(config: dict) -> tuple[str, ...]:
    """The files the port's tokenizer reads from a converted directory of this family."""
    return FAMILY_TOKENIZER_FILES[family(config)]


# fairseq's language-token spellings (fairseq/data/multilingual/multilingual_utils.py, get_lang_tok's
# TOKEN_STYLES): must match fairseq's, since the converter finds the tokens in the dictionary by them.
LANG_TOK_STYLES = {"multilingual": "__{}__", "mbart": "[{}]"}
ENCODER_LANGTOKS = ("src", "tgt")   # --encoder-langtok: the source's or the target's language token


@dataclass(frozen=True)
class LanguageTokens:
    """How a multilingual model (fairseq's ``translation_multi_simple_epoch``) is told its direction:
    the ``porting.multilingual`` section of config.json, read by the tokenizer and the search.

    fairseq's conventions, from the task's ``build_dataset_for_inference`` and ``inference_step``:
      * encoder_langtok "src"/"tgt": that language's token is prepended to the source ids
        (``PrependTokenDataset``), or replaces the source's final </s> with replacing_bos_eos;
      * decoder_langtok: the target language's token is forced as the first generated token
        (``prefix_tokens``, scored with its own log-prob, part of the hypothesis, stripped from the
        text); with replacing_bos_eos it replaces </s> as the decoder's start token instead.
    """
    langs: tuple[str, ...]              # fairseq's --langs: its order fixed the token ids
    lang_pairs: tuple[str, ...]         # the directions the model was trained on ("en-fr", ...)
    style: str                          # a key of LANG_TOK_STYLES
    encoder_langtok: str | None         # one of ENCODER_LANGTOKS, or None
    decoder_langtok: bool
    replacing_bos_eos: bool
    ids: dict[str, int]                 # language code -> its token's id in the shared dictionary

    def token(self, lang: str) -> str:
        return LANG_TOK_STYLES[self.style].format(lang)

    def default_direction(self) -> tuple[str, str]:
        """The first trained pair; a model read back from transformers records none: its first two languages."""
        src, tgt = self.lang_pairs[0].split("-") if self.lang_pairs else self.langs[:2]
        return src, tgt

    def trained(self) -> str:
        """The trained directions, as messages and the card say them."""
        return (f"trained on {', '.join(self.lang_pairs)}" if self.lang_pairs else
                "its trained directions are not recorded (read back from a transformers directory)")

    def direction_problems(self, source_lang: str | None, target_lang: str | None) -> list[str]:
        """Why this direction cannot be asked for (missing or unknown languages), in one message: the
        trained directions first, then the language tokens (the first 12 of a long list, and how many)."""
        out = []
        for flag, lang in (("--source-lang", source_lang), ("--target-lang", target_lang)):
            if not lang:
                out.append(f"{flag} is required for a multilingual model")
            elif lang not in self.ids:
                out.append(f"{flag} {lang!r} is not one of the model's languages")
        if out:
            shown = ", ".join(self.langs[:12]) + (f", … ({len(self.langs)} in all)" if len(self.langs) > 12 else "")
            out.append(f"it was {self.trained()}; its language tokens are {shown}")
        return out

    def untrained(self, source_lang: str, target_lang: str) -> str | None:
        """A warning for a direction the model knows both languages of but was not trained on (fairseq
        translates it all the same, and so does the port); None for a trained one, or where the
        trained directions are not recorded."""
        if not self.lang_pairs or f"{source_lang}-{target_lang}" in self.lang_pairs:
            return None
        return (f"{source_lang}-{target_lang} is not a direction the model was trained on ({', '.join(self.lang_pairs)}): "
                "it is translated all the same, as fairseq does, and the output may be poor")

    def source_ids(self, ids: list[int], source_lang: str, target_lang: str) -> list[int]:
        """Text ids ending with </s> -> what the encoder reads."""
        if self.encoder_langtok is None:
            return ids
        tok = self.ids[source_lang if self.encoder_langtok == "src" else target_lang]
        return ids[:-1] + [tok] if self.replacing_bos_eos else [tok] + ids

    def decoder_start(self, target_lang: str) -> tuple[int, tuple[int, ...]]:
        """(the decoder's first input token, the tokens forced as the first generated ones)."""
        if not self.decoder_langtok:
            return EOS, ()
        tok = self.ids[target_lang]
        return (tok, ()) if self.replacing_bos_eos else (EOS, (tok,))

    def to_dict(self) -> dict:
        return {**asdict(self), "langs": list(self.langs), "lang_pairs": list(self.lang_pairs)}

    @classmethod
    def from_dict(cls, d: dict) -> "LanguageTokens":
        missing = [k for k in cls.__dataclass_fields__ if k not in d]
        if missing:
            raise ConfigError(f"the multilingual section lacks {', '.join(missing)}")
        made = cls(**{**d, "langs": tuple(d["langs"]), "lang_pairs": tuple(d["lang_pairs"])})
        if made.style not in LANG_TOK_STYLES:
            raise ConfigError(f"lang_tok_style {made.style!r}: not one of fairseq's ({', '.join(LANG_TOK_STYLES)})")
        if made.encoder_langtok not in (None, *ENCODER_LANGTOKS):
            raise ConfigError(f"encoder_langtok {made.encoder_langtok!r}: not one of src, tgt or none")
        if set(made.ids) != set(made.langs):
            raise ConfigError("the multilingual section's token ids do not name exactly its languages")
        return made


def vocab_sizes(config: dict) -> tuple[int, int]:
    """(source, target) vocabulary sizes: FSMT's two keys, or M2M-100's one shared vocabulary."""
    if "src_vocab_size" in config:
        return config["src_vocab_size"], config["tgt_vocab_size"]
    return config["vocab_size"], config["vocab_size"]


def model_languages(config: dict) -> list[str]:
    """A bilingual model's [source, target]; a multilingual model's every language."""
    section = config["porting"].get("multilingual")
    return list(section["langs"]) if section is not None else list(config["langs"])


def language_tokens(config: dict) -> LanguageTokens | None:
    """A converted config's language tokens, or None for a bilingual model."""
    section = config["porting"].get("multilingual")
    return None if section is None else LanguageTokens.from_dict(section)


def read_config(model_dir: str | Path) -> dict:
    """config.json of a converted directory, checked against this contract."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ConfigError(f"{model_dir}: no config.json (is this a converted model directory?)")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as e:
        raise ConfigError(f"{path}: not readable JSON ({e})") from None
    section = config.get("porting") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: no `porting` section: convert with `porting convert fairseq`")
    version = section.get("format_version")
    if not isinstance(version, int):
        raise ConfigError(f"{path}: no format_version in its `porting` section")
    if version > FORMAT_VERSION:
        raise ConfigError(f"{path}: written in format version {version}; this workbench reads up to "
                          f"{FORMAT_VERSION}: upgrade porting-workbench, or convert again with this one")
    named = section.get("family", BILINGUAL)
    if not isinstance(named, str) or named not in FAMILY_TOKENIZER_FILES:
        raise ConfigError(f"{path}: family {named!r}; this workbench runs "
                          f"{', '.join(FAMILY_TOKENIZER_FILES)}: upgrade porting-workbench")
    ids = section.get("special_ids")
    if ids != SPECIAL_IDS.to_dict():
        raise ConfigError(f"{path}: special ids {ids}; the port runs fairseq's {SPECIAL_IDS.to_dict()}")
    return config
