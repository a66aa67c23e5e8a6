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

import logging
import time
from pathlib import Path

import torch

from porting.format import model_languages
from porting.generation.beam import generate, left_pad
from porting.generation.ensemble import Ensemble
from porting.generation.options import GenerationOptions
from porting.generation.results import Hypothesis
from porting.kernels import QUANTIZE_MODES
from porting.model.load import load_ensemble
from porting.tokenizer import SentencePieceTokenizer, Tokenizer, open_tokenizer, vocabulary_difference
from porting.translation import (  # noqa: F401  (their names here too: this module's callers import them from it)
    InputError,
    LineTranslator,
    SourceEncoder,
    Translation,
    batches_by_length,
    default_options,
    merged_options,
)

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
    """The members as they decode: int8 applied where asked (before the kernel set's copies are made from
    the models), the kernel set chosen (the checks: ``runtime_dtype``)."""
    runtime_dtype(next(models[0].parameters()).dtype, kernels, quantize)   # callers checked; the rule in one place
    if quantize in QUANTIZE_MODES:
        from porting.kernels.quantize import quantize_model

        said = [quantize_model(model, quantize) for model in models]
        for line in said[0]:                      # the members of an ensemble share an architecture
            log.info("%s: %s", quantize, line)
    return Ensemble(models, kernels)


class Translator(LineTranslator):
    """The port on torch: every model and ensemble, kernel set, dtype, int8 and generation option."""

    def __init__(self, tokenizer: Tokenizer | SentencePieceTokenizer, ensemble: Ensemble, config: dict,
                 defaults: dict | None = None, model_dir: str | Path | None = None,
                 normalize_punctuation: bool = False):
        super().__init__(tokenizer, config, defaults, model_dir, normalize_punctuation)
        self.ensemble = ensemble

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

    def _search_batch(self, ids: list[list[int]], opts: GenerationOptions, start, encoder_cache: dict | None,
                      cache_key: tuple) -> list[list[Hypothesis]]:
        src = left_pad(ids)
        encs = None
        if encoder_cache is not None:                   # reuse the encoder's work
            if cache_key not in encoder_cache:
                with torch.no_grad():
                    encoder_cache[cache_key] = self.ensemble.encode(src)
            encs = encoder_cache[cache_key]
        return generate(self.ensemble, src, opts, encs, start)
