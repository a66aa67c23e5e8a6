"""What several commands share: the generation flags (made from porting.generation.options, so a
new option is a new flag everywhere), the kernel flags, and the Translator they ask for."""
from __future__ import annotations

import sys

from porting.kernels import QUANTIZE_MODES
from porting.progress import progress_bar  # noqa: F401  (the commands' one progress display)

KERNELS_HELP = ("fast (default): cheaper kernels, same hypotheses; portable: the fast path on torch's kernels "
                "alone (what runs where the C kernels cannot be built); exact: fairseq's kernels, bitwise equal scores")


def _whole_number(text: str, minimum: int) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{value}: must be at least {minimum}")
    return value


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    return _whole_number(text, 1)


def positive_float(text: str) -> float:
    """An argparse type: a finite number above 0 (seconds)."""
    import argparse
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text}: must be a number above 0")
    return value


def non_negative_int(text: str) -> int:
    """An argparse type: a whole number of at least 0."""
    return _whole_number(text, 0)


def add_generation_flags(p, nbest: bool = True) -> None:
    """fairseq's generation options, by fairseq's names (defaults: the model's generation_config.json),
    then the batching and kernel flags. nbest: only for commands that print more than the best
    hypothesis (scoring uses the best one alone)."""
    from porting.generation import options

    for f in options.fields():
        if f.name == "nbest" and not nbest:
            continue
        # the flag's default is None: the value then comes from the model, which the help says
        kwargs = {"help": f.metadata["help"] + f" (default: the model's generation_config.json, else "
                                               f"{'fairseq' if f.metadata['fairseq'] else 'the port'}'s {f.default})"}
        if f.metadata["choices"]:
            kwargs["choices"] = list(f.metadata["choices"])
        else:
            kwargs["type"] = f.type
        p.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    p.add_argument("--batch-size", type=positive_int, default=32, help="sentences decoded together")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="torch's threads (each worker's, with --jobs or Ray); default: torch's own, one per physical "
                        "core, or OMP_NUM_THREADS where set. On a machine other work keeps busy, fewer is faster")
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the type the weights are cast to and computed in (bfloat16: approximate, faster where the "
                        "CPU has native bfloat16)")
    p.add_argument("--kernels", choices=["fast", "portable", "exact"], default="fast", help=KERNELS_HELP)
    p.add_argument("--quantize", choices=["none", *QUANTIZE_MODES], default="none",
                   help="int8: dynamic int8 linear layers where int8 is faster (on small models none is: they run "
                        "float32 and say so); int8-all: every product of the decoder and the encoder's feed-forward "
                        "layers, whatever it costs (the encoder's self-attention, in both, only where it gains). "
                        "Approximate: see README for the BLEU cost")


def translation_flags(args) -> list[str]:
    """The generation flags given on this command line (their defaults are None: the model's)."""
    from porting.generation.options import names

    return [f"--{n.replace('_', '-')}" for n in names() if getattr(args, n, None) is not None]


def runtime(args) -> dict:
    """How the models run (dtype, kernels, quantization): Translator.from_pretrained's keywords,
    recorded beside every result they produce."""
    return {"dtype": args.dtype, "kernels": args.kernels, "quantize": args.quantize,
            **({"threads": args.threads} if getattr(args, "threads", None) is not None else {})}


def add_metric_flag(p, what: str) -> None:
    """-m: the metric a command ranks by (porting.evaluation.scoring.TUNING): BLEU for translations,
    ROUGE-L for summaries."""
    p.add_argument("--metric", "-m", choices=("bleu", "rouge"), default="bleu",
                   help=f"what to {what}: bleu (sacreBLEU's BLEU, then chrF on ties) or rouge (ROUGE-L F1 from "
                        "rouge-score, then ROUGE-1 and ROUGE-2; for summaries). Default: %(default)s")


def add_direction_flags(p) -> None:
    """The languages to translate between: required for a multilingual model, optional (and checked)
    for a bilingual one."""
    p.add_argument("--source-lang", help="the source language (required for a multilingual model)")
    p.add_argument("--target-lang", help="the target language (required for a multilingual model)")


def text_options(args) -> dict:
    """How lines become ids beside the model's files (porting.tokenizer.open_tokenizer's keywords)."""
    return {"normalize_punctuation": getattr(args, "normalize_punctuation", False),
            "source_lang": getattr(args, "source_lang", None), "target_lang": getattr(args, "target_lang", None)}


def direction_problem(args, model_dir) -> str | None:
    """Why the model cannot translate in the direction the flags give (a multilingual model without
    --source-lang/--target-lang, an unknown language, a bilingual model's other languages), or None:
    asked before any work starts, once per command. A direction the model knows but was not trained
    on is translated, with one warning naming the trained ones."""
    from porting.format import ConfigError
    from porting.tokenizer import open_tokenizer

    try:
        tokenizer = open_tokenizer(model_dir, **text_options(args))
    except ConfigError as e:
        return str(e)
    tokens = getattr(tokenizer, "tokens", None)          # a multilingual model's language tokens
    if tokens is not None and (warning := tokens.untrained(tokenizer.source_lang, tokenizer.target_lang)):
        print(f"warning: {warning}", file=sys.stderr)
    return None


def load_translator(args, lean: bool = False, **kwargs):
    """The Translator the generation flags ask for. lean: for one model, porting/lean.py's where it runs that
    model and runtime (no torch; torch's Translator is made only if a batch needs it: the same hypotheses);
    torch's otherwise (and with PORTING_LEAN=0 in the environment)."""
    import os

    if lean and len(args.model) == 1 and os.environ.get("PORTING_LEAN", "1") != "0":
        import logging

        from porting.lean import LeanTranslator, Unsupported

        try:
            return LeanTranslator.open(args.model[0], lambda: _torch_translator(args, kwargs), **runtime(args), **kwargs)
        except Unsupported as e:
            logging.getLogger("porting").debug("not the lean path: %s", e)
    return _torch_translator(args, kwargs)


def _torch_translator(args, kwargs: dict):
    from porting_cli import import_holding_interrupts

    import_holding_interrupts("torch")
    from porting.translator import Translator

    return Translator.from_pretrained(*args.model, **runtime(args), **kwargs)


def generation_options(args, model_dir=None) -> dict:
    """The model's defaults (default: the first --model), overridden by the flags given: the
    Translator's own merge (porting.translator.merged_options)."""
    from porting.generation.options import names
    from porting.translation import default_options, merged_options

    defaults = default_options(model_dir if model_dir is not None else args.model[0])
    return merged_options(defaults, {k: getattr(args, k, None) for k in names()})


def add_engine_flags(p, shards_help: str = "cut the input into this many shards (default: one per worker)") -> None:
    """Where the work runs (porting.engine); engine_problems refuses what a choice would ignore."""
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="local: this machine, --jobs processes; ray: Ray actors, started inside this "
                        "process, or on the cluster at --ray-address")
    p.add_argument("--ray-address", metavar="HOST:PORT",
                   help="with --engine ray: join this running Ray cluster (as `ray start --head` printed it); "
                        "the model directories must be readable at the same paths on every node")
    p.add_argument("--ray-timeout", metavar="SECONDS", type=positive_float, default=None,
                   help="with --ray-address: how long the cluster may take to answer before the command gives up "
                        "(default: 30)")
    p.add_argument("--jobs", type=positive_int, default=1, help="with --engine local: worker processes")
    p.add_argument("--shards", type=positive_int, default=None, help=shards_help)


def engine_problems(args) -> list[str]:
    """Engine flags that would be ignored."""
    problems = []
    if args.ray_address is not None and args.engine != "ray":
        problems.append("--ray-address joins a Ray cluster: add --engine ray")
    if args.ray_timeout is not None and args.ray_address is None:
        problems.append("--ray-timeout bounds joining a cluster: add --engine ray --ray-address HOST:PORT")
    if args.jobs != 1 and args.engine == "ray":
        problems.append("--jobs sets the local engine's processes; Ray runs one worker per CPU of its cluster")
    return problems


def open_engine(args, model_dirs=None, **kwargs):
    """The engine the flags ask for, started, for these models (default: --model)."""
    from porting.engine import open_engine as start

    return start(args.engine, list(model_dirs or args.model), runtime(args), args.batch_size,
                 jobs=args.jobs, address=args.ray_address, connect_timeout=args.ray_timeout, **kwargs)


def translate_lines(args, model_dirs, lines: list[str], options: dict, desc: str) -> list[str]:
    """The best translation of each line, on the engine the flags chose, with a bar (bleu, select)."""
    from porting.engine.shards import plan_lines, run_sharded

    with open_engine(args, model_dirs, text=text_options(args)) as engine, progress_bar(len(lines), desc) as bar:
        plan = plan_lines(model_dirs[0], lines, args.batch_size, args.shards or engine.workers, text=text_options(args))
        return [t.texts[0] for t in run_sharded(engine, lines, plan, options, bar.update)]
