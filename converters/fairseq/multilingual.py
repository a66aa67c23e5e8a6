"""The multilingual family: checkpoints of fairseq's ``translation_multi_simple_epoch`` task (M2M-100,
NLLB-200), their one shared dictionary, their SentencePiece model and their language tokens.

What fairseq does, read from its source (fairseq/data/multilingual/):
  * the language list is ``--langs`` (or the ``--lang-dict`` file), in its order; without either,
    the sorted languages of ``--lang-pairs`` (multilingual_data_manager.load_langs);
  * the dictionary is the data dictionary with, for each ``--langtoks-specs`` entry (outer) and each
    language (inner), that language's token added by ``add_symbol``: appended when new, left where
    it is when the file already holds it (M2M-100's model_dict.128k.txt does); then ``<mask>`` for
    the mbart style (multilingual_utils.augment_dictionary);
  * a token is ``__xx__`` (style multilingual, the default) or ``[xx]`` (style mbart).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from converters.fairseq.dictionary import Dictionary
from porting.format import ENCODER_LANGTOKS, LANG_TOK_STYLES, LanguageTokens
from porting.tokenizer import PieceFit, piece_fit

TASK = "translation_multi_simple_epoch"
# The dictionary's file names, most specific first: M2M-100 ships the model's dictionary (language
# tokens included) beside the data's, NLLB-200 `dictionary.txt`, fairseq-preprocess writes `dict.txt`.
DICTIONARY_PATTERNS = ("model_dict*.txt", "dictionary.txt", "data_dict*.txt", "dict.txt")


@dataclass(frozen=True)
class MultilingualTask:
    """The task options that decide where language tokens go, as the checkpoint recorded them."""
    langs: tuple[str, ...]
    lang_pairs: tuple[str, ...]
    style: str
    encoder_langtok: str | None
    decoder_langtok: bool
    replacing_bos_eos: bool
    specs: tuple[str, ...]         # --langtoks-specs: "main", and "dae" for denoising data
    extra_data: dict | None

    def readable(self) -> bool:
        """Whether fairseq's rules say where its tokens go (a style and a placement it knows)."""
        return self.style in LANG_TOK_STYLES and self.encoder_langtok in (None, *ENCODER_LANGTOKS)

    def tokens_added(self) -> list[str]:
        """The symbols fairseq's augment_dictionary adds, in its order."""
        out = []
        for spec in self.specs:
            for lang in self.langs:
                suffix = "_dae" if spec.endswith("dae") else "_mined" if spec.endswith("mined") else ""
                out.append(LANG_TOK_STYLES[self.style].format(lang + suffix))
        if self.style == "mbart" or (self.extra_data and "mono_dae" in self.extra_data):
            out.append("<mask>")
        return out


def _listed(value) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def read_task(task: dict, data_dir: Path, problems: list[str], label: str,
              style_override: str | None = None) -> MultilingualTask | None:
    """The checkpoint's multilingual options, or None for another task; problems are named.
    style_override: the user's --lang-tok-style, in place of the checkpoint's."""
    name = task.get("_name") or task.get("task")
    if name != TASK:
        return None
    pairs = _listed(task.get("lang_pairs"))
    langs = _listed(task.get("langs"))
    if not langs and task.get("lang_dict"):
        # the path is the training machine's: look for the file by its name in the data directory
        path = data_dir / Path(str(task["lang_dict"])).name
        if path.is_file():
            langs = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        else:
            problems.append(f"{label}: the language list is --lang-dict {task['lang_dict']}; put that file "
                            f"({path.name}) in --data-dir")
    if not langs:
        langs = sorted({lang for p in pairs for lang in p.split("-")})
    style = style_override or task.get("lang_tok_style") or "multilingual"
    if style not in LANG_TOK_STYLES:
        where = "--lang-tok-style" if style_override else f"{label}: lang_tok_style"
        problems.append(f"{where} {style!r}: fairseq's styles are {', '.join(LANG_TOK_STYLES)}")
    encoder = task.get("encoder_langtok")
    if encoder not in (None, *ENCODER_LANGTOKS):
        problems.append(f"{label}: encoder_langtok {encoder!r}: fairseq's choices are {', '.join(ENCODER_LANGTOKS)}")
    specs = tuple(_listed(task.get("langtoks_specs")) or ["main"])
    if not pairs:
        problems.append(f"{label}: the task records no lang_pairs")
    return MultilingualTask(tuple(langs), tuple(pairs), style, encoder, bool(task.get("decoder_langtok")),
                            bool(task.get("lang_tok_replacing_bos_eos")), specs, task.get("extra_data") or None)


def find_dictionary(data_dir: Path, explicit: Path | None) -> Path | str:
    """The shared dictionary's path, or why there is none."""
    if explicit is not None:
        return explicit if explicit.is_file() else f"--dict {explicit}: no such file"
    for pattern in DICTIONARY_PATTERNS:
        found = sorted(data_dir.glob(pattern))
        if len(found) > 1:
            return f"{data_dir}: several dictionaries match {pattern} ({', '.join(p.name for p in found)}): choose with --dict"
        if found:
            return found[0]
    return (f"{data_dir}: no dictionary ({', '.join(DICTIONARY_PATTERNS)}); a multilingual model has one "
            "shared dictionary: give it with --dict")


def find_sentencepiece(data_dir: Path, explicit: Path | None) -> Path | str:
    if explicit is not None:
        return explicit if explicit.is_file() else f"--sentencepiece {explicit}: no such file"
    found = sorted(data_dir.glob("*.model"))
    if len(found) == 1:
        return found[0]
    if found:
        return f"{data_dir}: several SentencePiece models ({', '.join(p.name for p in found)}): choose with --sentencepiece"
    return (f"{data_dir}: no SentencePiece model (*.model): a multilingual model's text goes through one; "
            "give it with --sentencepiece")


def augment(d: Dictionary, task: MultilingualTask) -> list[str]:
    """fairseq's augment_dictionary, in place; returns problems. A dictionary holding some of the
    task's language tokens but not all is another model's: fairseq would append the missing ones
    after it, at ids the model never saw."""
    added = task.tokens_added()
    present = [t for t in added if t in d.indices]
    if present and len(present) < len(added):
        missing = [t for t in added if t not in d.indices]
        return [f"the dictionary holds {len(present)} of the {len(added)} language tokens the checkpoint names "
                f"but not {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}: another model's dictionary?"]
    for token in added:
        if token not in d.indices:
            d.indices[token] = len(d.symbols)
            d.symbols.append(token)
            d.counts.append(1)
    return []


def language_tokens(d: Dictionary, task: MultilingualTask) -> LanguageTokens:
    return LanguageTokens(task.langs, task.lang_pairs, task.style, task.encoder_langtok, task.decoder_langtok,
                          task.replacing_bos_eos, {lang: d.indices[LANG_TOK_STYLES[task.style].format(lang)]
                                                   for lang in task.langs})


def piece_share(model: Path, d: Dictionary) -> PieceFit:
    """The share of the SentencePiece model's pieces the dictionary holds (porting.tokenizer.piece_fit,
    the check the port repeats when it loads the converted directory)."""
    import sentencepiece

    return piece_fit(sentencepiece.SentencePieceProcessor(model_file=str(model)), d.indices)
