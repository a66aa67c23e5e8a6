"""An input cut into shards, and finished shards kept on disk so that an interrupted run resumes.

The plan: the Translator's own batches (lines sorted by length, cut every batch_size), dealt to the
shards in turn (batch j to shard j % n). A shard's lines, handed to the Translator in input order,
form exactly those batches again, so every line is decoded beside the same lines as in a
single-process run: the same bytes, whatever the engine and the number of shards (and, as no
output depends on its batch, the same hypotheses even where a plan were cut otherwise).
"""
from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from porting.engine.worker import Task
from porting.files import replace_text, sha256_file
from porting.format import read_config, tokenizer_files
from porting.translator import SourceEncoder, batches_by_length

JOB_FILE = "job.json"

class StoreError(ValueError):
    pass

def plan(lengths: Sequence[int], batch_size: int, shards: int) -> list[list[int]]:
    """Line indices of each shard, ascending; at most one shard per batch."""
    batches = batches_by_length(lengths, batch_size)
    n = max(1, min(shards, len(batches)))
    return [sorted(i for batch in batches[s::n] for i in batch) for s in range(n)]

def plan_lines(model_dir: Path, lines: Sequence[str], batch_size: int, shards: int, truncate: bool = False,
               text: dict | None = None) -> list[list[int]]:
    """The plan for these source lines, from their ids as the Translator encodes them (every line
    too long for the model reported at once, before any work starts)."""
    encoder = SourceEncoder.of(model_dir, **(text or {}))
    return plan([len(ids) for ids, _ in encoder.encode_all(lines, truncate)], batch_size, shards)


def tasks(lines: Sequence[str], shards: list[list[int]], options: dict, tag=None, reuse_encoder: bool = False,
          skip: set[int] = frozenset()) -> list[Task]:
    return [Task(s, tuple(lines[i] for i in idx), options, tag, reuse_encoder, first_line=idx[0] + 1)
            for s, idx in enumerate(shards) if s not in skip and idx]

def assemble(shards: list[list[int]], by_shard: dict[int, list], n: int) -> list:
    """Every line's result in input order, from each shard's results in its lines' order."""
    out: list = [None] * n
    for s, results in by_shard.items():
        for i, r in zip(shards[s], results):
            out[i] = r
    return out


def run_sharded(engine, lines: Sequence[str], shards: list[list[int]], options: dict, progress=None,
                reuse_encoder: bool = False) -> list:
    """Every line's Translation, in input order, the shards run by the engine."""
    done = {task.shard: translations
            for task, translations in engine.run(tasks(lines, shards, options, reuse_encoder=reuse_encoder), progress)}
    return assemble(shards, done, len(lines))

def fingerprint(model_dirs: Sequence[Path], *parts) -> str:
    """What a stored result belongs to: every file of the models a result depends on (whole-file
    hashes: a weight changed in place changes the fingerprint), then each part (lines, options)."""
    h = hashlib.sha256()
    for d in model_dirs:
        for f in result_files(Path(d)):
            h.update(str(f.relative_to(d)).encode() + b"\0" + sha256_file(f).encode())
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, ensure_ascii=False).encode() + b"\0")
    return h.hexdigest()[:16]


def result_files(model_dir: Path) -> list[Path]:
    """The files a translation depends on: the weights, config.json and the files the family's
    tokenizer reads (porting.format.tokenizer_files); not the card, the provenance, or
    generation_config.json (its settings enter through the options)."""
    names = {"config.json", *tokenizer_files(read_config(model_dir))}
    return sorted(p for p in model_dir.iterdir() if p.is_file() and (p.suffix == ".safetensors" or p.name in names))


class ShardStore:
    """A bulk run's finished shards: DIR/job.json (the fingerprint and the plan), and one file per
    finished shard, each written whole (porting.files.replace_text) and carrying its index, its line
    count and a checksum of its outputs. Nothing kept is trusted blindly: on resume the plan must cut
    the input's lines exactly once each, and a shard file that is not what it says (edited, cut,
    swapped with another) is set aside with a warning naming it and run again."""

    def __init__(self, directory: Path, fingerprint: str, shards: list[list[int]], warn: Callable = lambda message: None):
        self.directory, self.fingerprint, self.plan, self.warn = Path(directory), fingerprint, shards, warn

    @classmethod
    def open(cls, directory: Path, fingerprint: str, shards: list[list[int]], resume: bool,
             force: bool, warn: Callable = lambda message: None) -> "ShardStore":
        """A new store, or with resume the one an interrupted run of this job left (with its plan, its
        damaged shards removed, each named through warn)."""
        directory = Path(directory)
        job = directory / JOB_FILE
        if directory.exists():
            if not job.is_file():
                raise StoreError(f"{directory} exists and is not a shard store of ours: move it away")
            stored, damage = _read_job(job, sum(len(s) for s in shards))
            if resume and damage is None and stored.get("fingerprint") == fingerprint:
                store = cls(directory, fingerprint, stored["plan"], warn)     # the plan it was cut with
                store._set_aside_damaged()
                return store
            if resume and damage is not None:
                warn(f"{job}: {damage}; the kept shards are discarded and the job starts again")
            elif not force:
                why = ("belongs to another run (the models, options or input differ): add --force to discard it"
                       if resume else "holds the finished shards of an interrupted run: add --resume to finish it, "
                                      "or --force to start again")
                raise StoreError(f"{directory} {why}")
            shutil.rmtree(directory)
        directory.mkdir(parents=True)
        replace_text(job, json.dumps({"fingerprint": fingerprint, "plan": shards}) + "\n")
        return cls(directory, fingerprint, shards, warn)

    def _path(self, shard: int) -> Path:
        return self.directory / f"shard-{shard:05d}.json"

    @classmethod
    def kept(cls, directory: Path) -> tuple[int, int] | None:
        """(finished shards, shards) of the store an unfinished run left in directory, or None."""
        job = Path(directory) / JOB_FILE
        try:
            store = cls(directory, "", json.loads(job.read_text(encoding="utf-8"))["plan"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return len(store.done()), len(store.plan)

    def done(self) -> list[int]:
        """The finished shards (their files exist; nothing is read)."""
        return [s for s in range(len(self.plan)) if self._path(s).is_file()]

    def _read(self, shard: int) -> list[str] | str:
        """A kept shard's outputs, or why the file is not that shard's whole output."""
        try:
            kept = json.loads(self._path(shard).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:                      # cut, not UTF-8, not JSON
            return f"not readable ({e})"
        if not isinstance(kept, dict) or not isinstance(kept.get("outputs"), list):
            return "not a shard file of this version"
        outputs = kept["outputs"]
        if kept.get("shard") != shard:
            return f"holds shard {kept.get('shard')}'s outputs"
        if kept.get("lines") != len(self.plan[shard]) or len(outputs) != len(self.plan[shard]):
            return f"holds {len(outputs)} outputs for the shard's {len(self.plan[shard])} lines"
        if not all(isinstance(o, str) for o in outputs) or kept.get("sha256") != _checksum(outputs):
            return "its outputs do not match their checksum (edited after they were written)"
        return outputs

    def _set_aside_damaged(self) -> None:
        for s in self.done():
            if isinstance(why := self._read(s), str):
                self.warn(f"{self._path(s)}: {why}; the shard runs again")
                self._path(s).unlink()

    def finished(self) -> dict[int, list[str]]:
        """Finished shards' outputs, each checked (one that fails its checks is left out: it runs again)."""
        return {s: out for s in self.done() if not isinstance(out := self._read(s), str)}

    def put(self, shard: int, outputs: list[str]) -> None:
        replace_text(self._path(shard), json.dumps({"shard": shard, "lines": len(outputs), "sha256": _checksum(outputs),
                                                    "outputs": outputs}, ensure_ascii=False))

    def run(self, engine, lines: Sequence[str], options: dict, render: Callable, progress=None) -> list[str]:
        """Run the unfinished shards, keep each as it finishes (render: a Translation -> its output
        line), and return every line's output in input order."""
        done = self.finished()
        if progress is not None:
            progress(sum(len(self.plan[s]) for s in done))
        for task, translations in engine.run(tasks(lines, self.plan, options, skip=set(done)), progress):
            done[task.shard] = [render(t) for t in translations]
            self.put(task.shard, done[task.shard])
        return assemble(self.plan, done, len(lines))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _checksum(outputs: list[str]) -> str:
    return hashlib.sha256(json.dumps(outputs, ensure_ascii=False).encode()).hexdigest()


def _read_job(job: Path, lines: int) -> tuple[dict, str | None]:
    """job.json, and why it cannot be resumed from (None: it can): unreadable, or a plan that does not
    cut the input's `lines` lines exactly once each (an index twice, or past the input)."""
    try:
        stored = json.loads(job.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        return {}, f"not readable ({e})"
    plan = stored.get("plan") if isinstance(stored, dict) else None
    if not isinstance(plan, list) or not all(isinstance(s, list) and all(type(i) is int for i in s) for s in plan):
        return {}, "no plan of line indices"
    indices = sorted(i for s in plan for i in s)
    if indices != list(range(lines)):
        twice = sorted(i for i, n in Counter(indices).items() if n > 1)[:3]
        beyond = [i for i in indices if not 0 <= i < lines][:3]
        return {}, ("its plan does not cut the input's " + f"{lines} lines once each"
                    + (f" (line index {', '.join(map(str, twice))} twice)" if twice else "")
                    + (f" (line index {', '.join(map(str, beyond))} past the input)" if beyond else ""))
    return stored, None
