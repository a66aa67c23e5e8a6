"""What every engine runs: a task (lines and options) on a worker that holds the models."""
from __future__ import annotations

from dataclasses import dataclass, field


class EngineError(RuntimeError):
    """The engine cannot start, or a task failed for good (the message names what and where)."""


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker needs to load the models, wherever it runs (plain values: it travels to
    other processes and machines). The model directories must be readable there at these paths."""
    model_dirs: tuple[str, ...]
    runtime: dict                     # Translator.from_pretrained's dtype, kernels, quantize
    batch_size: int
    truncate: bool = False
    text: dict = field(default_factory=dict)   # how lines become ids: porting.tokenizer.open_tokenizer's keywords


@dataclass(frozen=True)
class Task:
    shard: int                        # which shard of the input (the Ray engine sends a shard to the same actor)
    lines: tuple[str, ...]
    options: dict
    tag: object = None                # the caller's label (a grid's setting), returned with the result
    reuse_encoder: bool = False       # keep the encoder outputs for later tasks on the same lines
    first_line: int = field(default=1, compare=False)     # the shard's first line in the input (errors name it)


class Worker:
    """The models, loaded once, and the encoder outputs of the lines this worker has translated."""

    def __init__(self, spec: WorkerSpec, threads: int | None):
        """threads: torch's threads for this worker (None: leave torch's setting, as a single-process
        run does). Scores are bitwise those of a single-process run with as many threads; with
        another count, float sums split otherwise and scores differ in the last bits (~1e-7)."""
        import torch

        from porting.translator import Translator

        if threads is not None:
            torch.set_num_threads(threads)
        self.spec = spec
        self.translator = Translator.from_pretrained(*spec.model_dirs, **spec.runtime, **spec.text)
        self.encoder_outputs: dict[tuple[str, ...], dict] = {}     # by the lines themselves: never another's

    def run(self, task: Task, progress=None) -> list:
        """The task's Translations, in its lines' order."""
        cache = self.encoder_outputs.setdefault(task.lines, {}) if task.reuse_encoder else None
        return self.translator.generate(list(task.lines), batch_size=self.spec.batch_size, truncate=self.spec.truncate,
                                        progress=progress, encoder_cache=cache, **task.options)
