"""Where translation work runs: one contract, two engines behind it, chosen once per command.

    engine = open_engine("local" | "ray", model_dirs, runtime, batch_size, jobs=..., address=...)
    for task, translations in engine.run(tasks, progress):   # as each task finishes
        ...
    engine.close()

A task (porting.engine.worker.Task) is some source lines and the generation options to translate
them with; a worker holds the models, loaded once, and the encoder outputs of the shards it has
seen. ``local`` runs the workers in this process (jobs=1) or in a process pool; ``ray`` runs them
as Ray actors, embedded in this process or on a running cluster (``address``), retried when a
worker dies. The shard plan (porting.engine.shards) makes every task's batches the ones a
single-process run decodes, so neither the engine nor the shard count changes a byte of output.
"""
from __future__ import annotations

from porting.engine.worker import EngineError  # noqa: F401  (the engines' error, declared with their contract)

ENGINES = ("local", "ray")


def open_engine(kind: str, model_dirs: list, runtime: dict, batch_size: int, jobs: int = 1,
                address: str | None = None, truncate: bool = False, text: dict | None = None,
                connect_timeout: float | None = None):
    """The engine of this kind, started. jobs: local worker processes (1: this process); address:
    a Ray cluster to join (None: Ray embedded in this process), given connect_timeout seconds to
    answer (None: porting.engine.on_ray's default); text: how lines become ids
    (porting.tokenizer.open_tokenizer's keywords: the direction, punctuation normalisation)."""
    from pathlib import Path

    from porting.engine.worker import WorkerSpec

    spec = WorkerSpec(tuple(str(Path(d).resolve()) for d in model_dirs), dict(runtime), batch_size, truncate,
                      dict(text or {}))
    if kind == "local":
        from porting.engine.local import LocalEngine

        return LocalEngine(spec, jobs)
    if kind == "ray":
        from porting.engine.on_ray import CONNECT_TIMEOUT_S, RayEngine

        return RayEngine(spec, address, CONNECT_TIMEOUT_S if connect_timeout is None else connect_timeout)
    raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {kind!r}")
