"""The local engine: the workers in this process (one job), or in a pool of processes on this machine."""
from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from porting.engine.worker import EngineError, Task, Worker, WorkerSpec


def failed(task: Task, why: str) -> str:
    """The one error a task that cannot finish gives: which shard, where it starts, and why."""
    return f"shard {task.shard} (from input line {task.first_line}: {task.lines[0][:60]!r}) failed: {why}"


class LocalEngine:
    def __init__(self, spec: WorkerSpec, jobs: int = 1):
        self.spec, self.jobs = spec, max(1, jobs)
        self.workers = self.jobs
        # each worker's threads: the ones asked for (runtime "threads"), else the machine's cores, shared out
        self.threads = spec.runtime.get("threads") or max(1, (os.cpu_count() or 1) // self.jobs)
        self.worker: Worker | None = None
        self.pool: ProcessPoolExecutor | None = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, tasks: list[Task], progress=None) -> Iterator[tuple[Task, list]]:
        """Each task with its Translations, as it finishes. progress(n): n more source lines done."""
        if self.jobs == 1 or len(tasks) <= 1:
            if self.worker is None:             # this process: its threads, as a run without an engine
                self.worker = Worker(self.spec, None)
            for task in tasks:                  # in this process the bar moves batch by batch
                yield task, self.worker.run(task, progress)
            return
        yield from self._in_pool(tasks, progress)

    def _in_pool(self, tasks: list[Task], progress) -> Iterator[tuple[Task, list]]:
        if self.pool is None:
            self.pool = ProcessPoolExecutor(self.jobs, initializer=_start, initargs=(self.spec, self.threads))
        pending = {self.pool.submit(_run, task): task for task in tasks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                task = pending.pop(future)
                try:
                    result = future.result()
                except BrokenProcessPool:
                    # a process of the pool died (killed, out of memory): the pool cannot go on
                    raise EngineError(failed(task, "a worker process died (the local engine does not retry; "
                                                   "finished work is kept)")) from None
                if progress is not None:
                    progress(len(task.lines))
                yield task, result

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None


# one worker per pool process, made by the pool's initializer
_WORKER: list[Worker] = []


def _start(spec: WorkerSpec, threads: int) -> None:
    _WORKER.append(Worker(spec, threads))


def _run(task: Task) -> list:
    return _WORKER[0].run(task)
