"""Hyperparameter search over generation settings, the way run_eval_search did it, but faster
(the encoder runs once per sentence for the whole grid) and resumable.

A grid is ``"beam=5:8 lenpen=0.6:1.0 early_stopping=true:false"``: keys as fairseq (and
``porting translate``) name the options, values separated by ``:``; the search runs every
combination. Finished settings are appended to a JSON-lines state file as they complete, so an
interrupted search picks up where it stopped. The work runs on an engine (porting.engine): settings
x shards of the source as tasks, each worker keeping the encoder outputs of its shards for the
whole grid; the scores do not depend on the engine or the shards.
"""
from __future__ import annotations

import itertools
import json
import os
import warnings
from pathlib import Path

from porting.engine import shards as sharding
from porting.evaluation.scoring import TUNING, TunedMetric
from porting.files import json_line, split_lines
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
                problems.append(f"{key}={v!r}: not a valid {getattr(KEYS[key], '__name__', 'value')}"
                                + (f"; values are separated by ':', as {key}={v.replace(',', ':')}" if "," in v else ""))
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
    """What a state file belongs to: the models' files, the data and the fixed options."""
    return sharding.fingerprint(model_dirs, source, reference, base)


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


def run_grid(model_dirs: list[Path], source: list[str], reference: list[str], settings: list[dict], base: dict,
             state: Path, engine=None, shards: int = 1, progress=None, runtime: dict | None = None,
             batch_size: int = 32, jobs: int = 1, text: dict | None = None,
             metric: TunedMetric = TUNING["bleu"]) -> list[dict]:
    """Score every setting (merged over ``base``) on the engine (porting.engine; None: a local one
    with ``jobs`` processes and this ``batch_size``, opened here), its models run as ``runtime``
    says (Translator.from_pretrained's dtype, kernels, quantize), the source cut into ``shards``;
    returns one record per setting, resumed ones included. ``progress(n)`` is called with each
    number of source lines translated (resumed settings count at once). Each record holds ``metric``'s
    scores (BLEU and chrF, or ROUGE)."""
    runtime = dict(runtime or {})
    if engine is None:
        from porting.engine import open_engine

        with open_engine("local", model_dirs, runtime, batch_size, jobs, text=text) as local:
            return run_grid(model_dirs, source, reference, settings, base, state, local, shards, progress, runtime,
                            metric=metric)
    text = engine.spec.text            # the direction: part of what the scores belong to
    # the metric is part of what a record holds (a BLEU state's records have no ROUGE); BLEU's states keep
    # the fingerprint they had before there was a choice
    fp = fingerprint(model_dirs, source, reference, {**base, "runtime": runtime,
                                                     **({"text": text} if any(text.values()) else {}),
                                                     **({"metric": metric.name} if metric.name != "bleu" else {})})
    done = load_state(state, fp)
    todo = [s for s in settings if setting_key(s) not in done]
    if progress is not None:
        progress((len(settings) - len(todo)) * len(source))
    state.parent.mkdir(parents=True, exist_ok=True)
    _end_torn_line(state)
    plan = sharding.plan_lines(model_dirs[0], source, engine.spec.batch_size, shards, text=text)
    work = [task for s in todo for task in sharding.tasks(source, plan, {**base, **s}, tag=setting_key(s),
                                                           reuse_encoder=True)]
    todo_by_key = {setting_key(s): s for s in todo}
    parts: dict[str, dict[int, list]] = {key: {} for key in todo_by_key}
    for task, translations in engine.run(work, progress):
        parts[task.tag][task.shard] = translations
        if len(parts[task.tag]) == len(plan):              # the setting's last shard: score it, keep it
            hyps = [t.texts[0] for t in sharding.assemble(plan, parts.pop(task.tag), len(source))]
            rec = {"fingerprint": fp, "setting": todo_by_key[task.tag], **metric.score(hyps, reference)}
            with open(state, "a") as f:                 # appended as each finishes: resumable
                f.write(json_line(rec) + "\n")
            done[task.tag] = rec
    return [done[setting_key(s)] for s in settings]


def markdown_table(records: list[dict], keys: list[str], defaults: dict, metric: TunedMetric = TUNING["bleu"]) -> str:
    """The grid's results, best first, as a GitHub Markdown table (every row as many cells as the header)."""
    rows = sorted(records, key=metric.key, reverse=True)
    head = [*metric.rank, *keys, "note"]

    def row(cells) -> str:
        return "| " + " | ".join(cells) + " |"
    lines = [row(head), row("-" * max(4, len(h)) for h in head)]
    for r in rows:
        is_default = all(defaults.get(k) == r["setting"][k] for k in keys)
        lines.append(row([*(f"{r[c]:.2f}" for c in metric.rank), *(str(r["setting"][k]) for k in keys),
                          "current default" if is_default else ""]))
    return "\n".join(lines)
