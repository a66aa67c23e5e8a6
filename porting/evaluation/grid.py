"""Hyperparameter search over generation settings, the way run_eval_search did it, but faster
(the encoder runs once per sentence for the whole grid) and resumable.

A grid is ``"beam=5:8 lenpen=0.6:1.0 early_stopping=true:false"``: keys as fairseq (and
``porting translate``) name the options, values separated by ``:``; the search runs every
combination. Finished settings are appended to a JSON-lines state file as they complete, so an
interrupted search picks up where it stopped.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from porting.evaluation.scoring import score
from porting.files import json_line, sha256_file, split_lines
from porting.generation import options

# key -> parser of one value: the searchable generation options, as porting.generation.options declares them
KEYS = options.searchable()
# what else users type for them: the flags' spelling, and transformers' names for the options that
# mean the same there (run_eval_search's grids use these; min_length/max_length count differently)
ALIASES = {"num_beams": "beam", "length_penalty": "lenpen",
           **{key.replace("_", "-"): key for key in KEYS if "_" in key}}


class GridError(ValueError):
    pass


def parse_grid(spec: str) -> list[dict]:
    """Every combination of the grid, in a stable order; all problems reported at once."""
    problems, axes = [], {}
    for part in spec.split():
        key, sep, values = part.partition("=")
        if not sep or not values:
            problems.append(f"{part!r}: expected key=value1:value2:...")
            continue
        key = ALIASES.get(key, key)
        if key not in KEYS:
            problems.append(f"unknown search key {key!r}; known: {', '.join(KEYS)} "
                            f"(also spelled {', '.join(ALIASES)})")
            continue
        if key in axes:
            problems.append(f"{key} given twice")
            continue
        parsed = []
        for v in values.split(":"):
            try:
                parsed.append(KEYS[key](v))
            except ValueError:
                problems.append(f"{key}={v!r}: not a valid {getattr(KEYS[key], '__name__', 'value')}")
        axes[key] = list(dict.fromkeys(parsed))
        problems += [f"{key}={v!r}: {e}" for v in axes[key] if (e := _invalid(key, v))]
    if not axes and not problems:
        problems.append("empty search grid")
    if problems:
        raise GridError("\n".join(problems))
    return [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]


def _invalid(key: str, value) -> str | None:
    """Why one grid value is not a valid option on its own (the options' own validation), or None."""
    try:
        options.GenerationOptions(**{key: value})
    except ValueError as e:
        return str(e)
    return None


def setting_key(setting: dict) -> str:
    return json.dumps(setting, sort_keys=True)


def fingerprint(model_dirs: list[Path], source: list[str], reference: list[str], base: dict) -> str:
    """What a state file belongs to: every file of the models a result depends on (whole-file
    hashes: a weight changed in place changes the fingerprint), the data and the fixed options."""
    h = hashlib.sha256()
    for d in model_dirs:
        for f in sorted(p for p in Path(d).rglob("*") if p.is_file() and _result_depends_on(p)):
            h.update(str(f.relative_to(d)).encode() + b"\0" + sha256_file(f).encode())
    h.update("\n".join(source).encode() + b"\0" + "\n".join(reference).encode())
    h.update(json.dumps(base, sort_keys=True).encode())
    return h.hexdigest()[:16]


def _result_depends_on(path: Path) -> bool:
    """The weights, the architecture and the vocabularies; not the card, the provenance, or
    generation_config.json (its settings enter through the fixed options)."""
    return path.suffix == ".safetensors" or path.name in ("config.json", "vocab-src.json", "vocab-tgt.json", "merges.txt")


def _end_torn_line(path: Path) -> None:
    """A record torn by an interrupt has no newline: end it, so the next record starts a line of its own."""
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")


def load_state(path: Path, fp: str) -> dict[str, dict]:
    """Finished settings of this fingerprint. A line that is not JSON is a record an interrupt tore
    while it was written: skipped, with a warning (its setting runs again)."""
    done = {}
    if not path.exists():
        return done
    lines = split_lines(path.read_text(encoding="utf-8"))
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{n}: an unfinished record (an interrupted write) is skipped; its setting runs again",
                          stacklevel=2)
            continue
        if rec.get("fingerprint") == fp:
            done[setting_key(rec["setting"])] = rec
    return done


# ---------------------------------------------------------------- one process's work

_WORKER: dict = {}


def _init_worker(model_dirs, source, batch_size, threads, runtime):
    import torch

    from porting.translator import Translator

    torch.set_num_threads(threads)
    _WORKER.update(translator=Translator.from_pretrained(*model_dirs, **runtime), source=source,
                   batch_size=batch_size, cache={})


def _run_setting(options: dict, progress=None) -> list[str]:
    w = _WORKER
    return w["translator"].translate(w["source"], batch_size=w["batch_size"], encoder_cache=w["cache"],
                                     progress=progress, **options)


def run_grid(model_dirs: list[Path], source: list[str], reference: list[str], settings: list[dict], base: dict,
             state: Path, jobs: int = 1, batch_size: int = 32, progress=None, runtime: dict | None = None) -> list[dict]:
    """Score every setting (merged over ``base``) with the models run as ``runtime`` says
    (Translator.from_pretrained's dtype, kernels, quantize); returns one record per setting,
    resumed ones included. ``progress(n)`` is called with each number of source lines translated
    (resumed settings count at once; in parallel runs, a setting counts when it finishes)."""
    runtime = dict(runtime or {})
    fp = fingerprint(model_dirs, source, reference, {**base, "runtime": runtime})
    done = load_state(state, fp)
    todo = [s for s in settings if setting_key(s) not in done]
    if progress is not None:
        progress((len(settings) - len(todo)) * len(source))
    state.parent.mkdir(parents=True, exist_ok=True)
    _end_torn_line(state)
    threads = max(1, (os.cpu_count() or 1) // max(1, jobs))

    def record(setting, hyps, counted: bool):
        rec = {"fingerprint": fp, "setting": setting, **score(hyps, reference).to_dict()}
        with open(state, "a") as f:                 # appended as each finishes: resumable
            f.write(json_line(rec) + "\n")
        done[setting_key(setting)] = rec
        if progress is not None and not counted:
            progress(len(source))

    if jobs <= 1 or len(todo) <= 1:
        _init_worker(model_dirs, source, batch_size, threads, runtime)
        for s in todo:
            record(s, _run_setting({**base, **s}, progress), counted=True)
    else:
        with ProcessPoolExecutor(jobs, initializer=_init_worker,
                                 initargs=(model_dirs, source, batch_size, threads, runtime)) as pool:
            for s, hyps in zip(todo, pool.map(_run_setting, [{**base, **s} for s in todo])):
                record(s, hyps, counted=False)
    return [done[setting_key(s)] for s in settings]


def markdown_table(records: list[dict], keys: list[str], defaults: dict) -> str:
    rows = sorted(records, key=lambda r: (-r["bleu"], -r["chrf"]))
    head = ["bleu", "chrf", *keys, ""]
    lines = [" | ".join(head), " | ".join("-" * max(4, len(h)) for h in head)]
    for r in rows:
        is_default = all(defaults.get(k) == r["setting"][k] for k in keys)
        lines.append(" | ".join([f"{r['bleu']:.2f}", f"{r['chrf']:.2f}", *(str(r["setting"][k]) for k in keys),
                                 "(current default)" if is_default else ""]))
    return "\n".join(lines)
