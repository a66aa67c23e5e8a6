"""What every runtime of the port shares between lines of text and Translations, without torch: sources
encoded and checked (``SourceEncoder``), batched by length as fairseq batches them, generation options
merged with the model's defaults, hypotheses decoded to text (``LineTranslator``). porting/translator.py's
``Translator`` runs the search on torch (every model, kernel set and option); porting/lean.py's
``LeanTranslator`` on the compiled kernels alone, in a process that never imports torch.
"""
from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from porting.format import ConfigError, read_config
from porting.generation.options import GenerationOptions
from porting.generation.results import Hypothesis
from porting.tokenizer import SentencePieceTokenizer, Tokenizer, decoder_start, open_tokenizer

log = logging.getLogger(__name__)


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


class LineTranslator:
    """Lines in, Translations out, for one model's tokenizer and config; a runtime supplies
    ``_search_batch`` (one batch of source ids -> each line's hypotheses, best first)."""

    def __init__(self, tokenizer: Tokenizer | SentencePieceTokenizer, config: dict, defaults: dict | None = None,
                 model_dir: str | Path | None = None, normalize_punctuation: bool = False):
        self.tokenizer, self.config = tokenizer, config
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
            ids = [encoded[i][0] for i in idx]
            cache_key = (tokenizer.source_lang, tokenizer.target_lang, *idx)   # same lines, batches and direction
            for i, hyps in zip(idx, self._search_batch(ids, opts, start, encoder_cache, cache_key)):
                hyps = hyps[: opts.nbest]
                results[i] = Translation(lines[i], encoded[i][0], hyps,
                                         [tokenizer.decode(h.tokens) for h in hyps], encoded[i][1])
            if progress is not None:
                progress(len(idx))
        done = time.perf_counter()
        log.debug("%d lines: tokenized in %.3f s, decoded (encoder, search, detokenization) in %.3f s, %.1f lines/s",
                  len(lines), tokenized - started, done - tokenized, len(lines) / max(done - started, 1e-9))
        return results

    def _search_batch(self, ids: list[list[int]], opts: GenerationOptions, start, encoder_cache: dict | None,
                      cache_key: tuple) -> list[list[Hypothesis]]:
        """Each line's hypotheses for one batch of source ids (every finalised one, best first); encoder_cache:
        the caller's dict where the encoder's outputs may be kept under cache_key (None: not kept)."""
        raise NotImplementedError

    def translate(self, lines: str | Sequence[str], **options) -> list[str] | str:
        """The best translation of each line (one line as a str: its translation as a str); options as
        generate's (source_lang, target_lang among them)."""
        if isinstance(lines, str):
            return self.generate(lines, **options).texts[0]
        return [t.texts[0] for t in self.generate(lines, **options)]
