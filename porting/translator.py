"""The port's Python API.

    from porting import Translator
    t = Translator.from_pretrained("out/ende-sep")            # several directories = an ensemble
    t.translate("Delete the selected rows?")                  # -> "Ausgewählte Zeilen löschen?"
    t.translate(["Delete the selected rows?"], beam=5)         # -> ["Ausgewählte Zeilen löschen?"]
    t.generate(["..."], nbest=5)                               # -> Translation objects with tokens and scores
    m = Translator.from_pretrained("out/m2m", source_lang="en", target_lang="fr")   # a multilingual model

Generation options default to the model's generation_config.json (its ``fairseq`` section, what
``porting search --write-best`` tunes), as transformers' ``generate()`` reads its own; keyword
arguments override them. ``porting translate`` and the other commands merge them the same way
(``merged_options``).
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from porting.format import ConfigError, model_languages, read_config
from porting.generation.beam import Hypothesis, generate, left_pad
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.kernels import QUANTIZE_MODES
from porting.model.load import load_ensemble
from porting.tokenizer import SentencePieceTokenizer, Tokenizer, decoder_start, open_tokenizer, vocabulary_difference


class InputError(ValueError):
    pass


@dataclass
class Translation:
    source: str
    source_ids: list[int]
    hypotheses: list[Hypothesis]
    texts: list[str] = field(default_factory=list)
    truncated: bool = False


class SourceEncoder:
    """Source lines -> ids as the Translator feeds them to the model, without loading a weight: the
    shard planner (porting.engine.shards) batches by these lengths exactly as the Translator does."""

    def __init__(self, tokenizer: Tokenizer | SentencePieceTokenizer, max_source_positions: int):
        self.tokenizer, self.max_source_positions = tokenizer, max_source_positions

    @classmethod
    def of(cls, model_dir: str | Path, normalize_punctuation: bool = False, source_lang: str | None = None,
           target_lang: str | None = None) -> "SourceEncoder":
        config = read_config(model_dir)
        return cls(open_tokenizer(model_dir, normalize_punctuation, source_lang, target_lang),
                   config["porting"]["architecture"]["max_source_positions"])

    def encode(self, line: str, truncate: bool = False) -> tuple[list[int], bool]:
        ids = self.tokenizer.encode(line)
        if len(ids) > self.max_source_positions:
            if not truncate:
                raise InputError(f"{len(ids)} tokens (with </s>), the model takes at most {self.max_source_positions}")
            tail = self.tokenizer.tail                # the ids the family puts last: kept (</s>; mBART's </s> [xx_YY])
            return ids[: self.max_source_positions - tail] + ids[-tail:], True
        return ids, False

    def encode_all(self, lines: Sequence[str], truncate: bool = False) -> list[tuple[list[int], bool]]:
        """(ids, truncated) for every line; every line too long for the model reported at once."""
        encoded, problems = [], []
        for n, line in enumerate(lines, 1):
            try:
                encoded.append(self.encode(line, truncate))
            except InputError as e:
                problems.append(f"line {n}: {e}")
        if problems:
            raise InputError("input too long for the model (use truncation to cut it):\n  " + "\n  ".join(problems))
        return encoded


def batches_by_length(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Line indices in the batches the Translator decodes: sorted by length (ties in input order, as
    fairseq does), then cut every batch_size lines."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


def default_options(model_dir: str | Path) -> dict:
    """The generation options a converted directory's generation_config.json sets (its ``fairseq``
    section), or none."""
    path = Path(model_dir) / "generation_config.json"
    if not path.exists():
        return {}
    try:
        fairseq = json.loads(path.read_text(encoding="utf-8")).get("fairseq", {})
    except (ValueError, AttributeError) as e:
        raise ConfigError(f"{path}: not a generation config ({e})") from None
    return {k: v for k, v in fairseq.items() if k in GenerationOptions.__dataclass_fields__}


def merged_options(defaults: dict, overrides: dict) -> dict:
    """The one place defaults and explicit options meet: explicit ones win, None means not given;
    the result is checked (GenerationOptions) and returned as a plain dict."""
    merged = {**defaults, **{k: v for k, v in overrides.items() if v is not None}}
    GenerationOptions(**merged)
    return merged


log = logging.getLogger(__name__)


def runtime_dtype(dtype: torch.dtype | str, kernels: str, quantize: str | None) -> torch.dtype:
    """How the native port may run, checked once for every command (ValueError naming the fault):
    the dtype as torch's ("float32", "bfloat16": as the commands spell it)."""
    if isinstance(dtype, str):
        if dtype not in ("float32", "bfloat16"):
            raise ValueError(f"dtype must be float32 or bfloat16, got {dtype!r}")
        dtype = getattr(torch, dtype)
    if quantize not in (None, "none", *QUANTIZE_MODES):
        raise ValueError(f"quantize must be {', '.join(QUANTIZE_MODES)} or none, got {quantize!r}")
    if quantize in QUANTIZE_MODES and (dtype != torch.float32 or kernels == "exact"):
        raise ValueError("int8 quantization needs --dtype float32 and --kernels fast or portable")
    return dtype


def runtime_ensemble(models: list, kernels: str, quantize: str | None) -> Ensemble:
    """The members as they decode: the kernel set chosen, int8 applied where asked (the checks:
    ``runtime_dtype``)."""
    ensemble = Ensemble(models, kernels)
    if quantize in QUANTIZE_MODES:
        from porting.kernels.quantize import quantize_int8

        for line in quantize_int8(ensemble.models, ensemble.decoders, ensemble.encoders, quantize):
            log.info("%s: %s", quantize, line)
    return ensemble


class Translator:
    def __init__(self, tokenizer: Tokenizer | SentencePieceTokenizer, ensemble: Ensemble, config: dict,
                 defaults: dict | None = None, model_dir: str | Path | None = None,
                 normalize_punctuation: bool = False):
        self.tokenizer, self.ensemble, self.config = tokenizer, ensemble, config
        self.defaults = dict(defaults or {})           # from the model's generation_config.json
        self.max_source_positions = config["porting"]["architecture"]["max_source_positions"]
        self.sources = SourceEncoder(tokenizer, self.max_source_positions)
        self.model_dir = model_dir                     # where another direction's tokenizer is opened, and how
        self.normalize_punctuation = normalize_punctuation
        self._directions = {(tokenizer.source_lang, tokenizer.target_lang): self.sources}

    def _sources(self, source_lang: str | None, target_lang: str | None) -> SourceEncoder:
        """The encoder of the direction a call asks for (its own tokenizer: the language tokens), opened
        once: one multilingual model serves every direction without loading its weights again."""
        key = (source_lang or self.tokenizer.source_lang, target_lang or self.tokenizer.target_lang)
        if key not in self._directions:
            if self.model_dir is None:
                raise ValueError("this Translator was built for one direction (from_pretrained keeps the others)")
            self._directions[key] = SourceEncoder(open_tokenizer(self.model_dir, self.normalize_punctuation, *key),
                                                  self.max_source_positions)
        return self._directions[key]

    @classmethod
    def from_pretrained(cls, *model_dirs: str | Path, dtype: torch.dtype | str = torch.float32,
                        normalize_punctuation: bool = False, kernels: str = "fast",
                        quantize: str | None = None, source_lang: str | None = None,
                        target_lang: str | None = None, threads: int | None = None) -> "Translator":
        """Each directory contributes all its members (a converted ensemble); vocabularies must agree.

        source_lang, target_lang: the direction; required for a multilingual model (a DirectionError
        names its languages otherwise), and a bilingual model's own if given.

        kernels: "fast" (default), "portable" (the fast path on torch's kernels alone) or "exact"
        (fairseq's kernels, bitwise equal to fairseq).
        quantize: None, "int8" (dynamic int8 linear layers where they are faster) or "int8-all" (every
            one; porting/kernels/quantize.py); float32 and fast kernels only.
        threads: torch's threads for this process (None: torch's own, one per physical core, or
        OMP_NUM_THREADS where set); fewer is faster where other work keeps the cores busy."""
        if not model_dirs:
            raise ValueError("give at least one converted model directory")
        started = time.perf_counter()
        dtype = runtime_dtype(dtype, kernels, quantize)
        if threads is not None:
            if type(threads) is not int or threads < 1:
                raise ValueError(f"threads must be a whole number of at least 1, got {threads!r}")
            torch.set_num_threads(threads)
        tokenizer = open_tokenizer(model_dirs[0], normalize_punctuation, source_lang, target_lang)  # errors first
        models, first = [], None
        for d in model_dirs:
            config, members = load_ensemble(d, dtype)
            if first is None:
                first = config
            elif model_languages(config) != model_languages(first):
                raise ValueError(f"{d}: languages {model_languages(config)} differ from {model_dirs[0]}'s "
                                 f"{model_languages(first)}: cannot ensemble")
            elif (difference := vocabulary_difference(model_dirs[0], d)) is not None:
                raise ValueError(f"cannot ensemble {model_dirs[0]} and {d}: {difference}")
            models += members
        ensemble = runtime_ensemble(models, kernels, quantize)
        log.debug("loaded %s (%d model%s, %s, kernels %s, %d threads) in %.2f s", ", ".join(map(str, model_dirs)),
                  len(models), "s" * (len(models) != 1), str(dtype).removeprefix("torch."), kernels,
                  torch.get_num_threads(), time.perf_counter() - started)
        return cls(tokenizer, ensemble, first, default_options(model_dirs[0]), model_dirs[0], normalize_punctuation)

    default_options = staticmethod(default_options)

    def options(self, **overrides) -> dict:
        """The options a call with these keyword arguments runs with: the model's defaults, overridden."""
        return merged_options(self.defaults, overrides)

    def encode(self, line: str, truncate: bool = False) -> tuple[list[int], bool]:
        return self.sources.encode(line, truncate)

    def generate(self, lines: str | Sequence[str], batch_size: int = 32, truncate: bool = False, progress=None,
                 encoder_cache: dict | None = None, source_lang: str | None = None, target_lang: str | None = None,
                 **options) -> list[Translation] | Translation:
        """Every line gets a Translation, in input order (one line as a str: its Translation).
        Options (fairseq's names, porting.generation.options) override the model's defaults. Lines
        are batched by length (as fairseq does); no line's output depends on its batch (unless
        ``max_len_from="batch-width"`` asks for fairseq's own length cap). Pass the same dict as
        ``encoder_cache`` to calls over the same lines to run the encoder once for all of them.
        source_lang, target_lang: this call's direction (a multilingual model serves every one; not
        given: the one the Translator was made for)."""
        if isinstance(lines, str):                       # not its characters: one line
            return self.generate([lines], batch_size, truncate, progress, encoder_cache, source_lang, target_lang,
                                 **options)[0]
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        lines = list(lines)
        opts = GenerationOptions(**self.options(**options))
        sources = self._sources(source_lang, target_lang)
        tokenizer = sources.tokenizer
        started = time.perf_counter()
        encoded = sources.encode_all(lines, truncate)
        tokenized = time.perf_counter()
        results: list[Translation | None] = [None] * len(lines)
        start = decoder_start(tokenizer)             # language tokens, forced <s>, mBART's end token
        for idx in batches_by_length([len(ids) for ids, _ in encoded], batch_size):
            src = left_pad([encoded[i][0] for i in idx])
            encs = None
            if encoder_cache is not None:  # same lines, same batches, same direction: reuse the encoder's work
                key = (tokenizer.source_lang, tokenizer.target_lang, *idx)
                if key not in encoder_cache:
                    with torch.no_grad():
                        encoder_cache[key] = self.ensemble.encode(src)
                encs = encoder_cache[key]
            for i, hyps in zip(idx, generate(self.ensemble, src, opts, encs, start)):
                hyps = hyps[: opts.nbest]
                results[i] = Translation(lines[i], encoded[i][0], hyps,
                                         [tokenizer.decode(h.tokens) for h in hyps], encoded[i][1])
            if progress is not None:
                progress(len(idx))
        done = time.perf_counter()
        log.debug("%d lines: tokenized in %.3f s, decoded (encoder, search, detokenization) in %.3f s, %.1f lines/s",
                  len(lines), tokenized - started, done - tokenized, len(lines) / max(done - started, 1e-9))
        return results

    def translate(self, lines: str | Sequence[str], **options) -> list[str] | str:
        """The best translation of each line (one line as a str: its translation as a str); options as
        generate's (source_lang, target_lang among them)."""
        if isinstance(lines, str):
            return self.generate(lines, **options).texts[0]
        return [t.texts[0] for t in self.generate(lines, **options)]
