"""The Ray engine: one worker actor per CPU of the cluster, each holding the models once.

Embedded (no address): Ray is started inside this process for this run and stopped after it,
nothing to start by hand. With an address, the run joins that cluster and leaves it running.
A task goes to the actor of its shard (shard % actors), so that an actor keeps the encoder
outputs of its shards for every setting of a grid. An actor whose process dies is restarted and
its unfinished task run again (RETRIES times): the result is the same, as no output depends on
the worker or its batch. Ray never reports usage statistics from here (RAY_USAGE_STATS_ENABLED=0).
"""
from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Iterator

from porting.engine.local import failed
from porting.engine.worker import EngineError, Task, Worker, WorkerSpec

RETRIES = 3                                   # restarts of a dead actor, and runs of its lost task
OBJECT_STORE_BYTES = 256 * 1024 ** 2          # embedded: results are text, not tensors; Ray's default takes 30% of RAM
INSTALL_HINT = "pip install 'porting-workbench[ray]'"
CONNECT_TIMEOUT_S = 30.0                      # joining a cluster: how long its address may take to answer


def unreachable(address: str, timeout: float) -> str | None:
    """Why nothing answers at a cluster's HOST:PORT within timeout seconds (None: something does).
    Ray's own join retries an address that refuses for minutes, printing only its GCS warnings: this
    asks first, retrying a refusal (a head still starting) until the deadline. Addresses that are not
    HOST:PORT ("auto", a ray:// client address' scheme aside) are left to Ray."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    deadline, why = time.monotonic() + timeout, "no answer"
    while True:
        left = deadline - time.monotonic()
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=max(0.1, min(left, 5.0))):
                return None
        except OSError as e:
            why = e.strerror or type(e).__name__
        if time.monotonic() + 0.5 >= deadline:
            return f"nothing answered at {address} within {timeout:g} s ({why}); is the cluster started?"
        time.sleep(0.5)


def import_ray():
    try:
        import ray
    except ImportError:
        raise EngineError(f"--engine ray needs Ray, which is not installed: {INSTALL_HINT}") from None
    return ray


class RayEngine:
    def __init__(self, spec: WorkerSpec, address: str | None = None, connect_timeout: float = CONNECT_TIMEOUT_S):
        if address is not None and (why := unreachable(address, connect_timeout)):
            raise EngineError(f"cannot join the Ray cluster at {address}: {why}")
        ray = self.ray = import_ray()
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        self.embedded = address is None
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if self.embedded:      # "local": a new instance even where a `ray start` cluster runs on this machine
                ray.init(address="local", include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES, **quiet)
            else:
                ray.init(address=address, **quiet)
        except (ConnectionError, ValueError, RuntimeError) as e:
            where = "start Ray in this process" if self.embedded else f"join the Ray cluster at {address}"
            raise EngineError(f"cannot {where}: {e}") from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        actor = ray.remote(num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)(Worker)
        self.spec, self.workers = spec, max(1, cpus)
        self.actors = [actor.remote(spec, 1) for _ in range(self.workers)]     # one torch thread per CPU

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def run(self, tasks: list[Task], progress=None) -> Iterator[tuple[Task, list]]:
        """Each task with its Translations, as it finishes. progress(n): n more source lines done."""
        ray = self.ray
        pending = {self.actors[task.shard % len(self.actors)].run.remote(task): task for task in tasks}
        while pending:
            (ref,), _ = ray.wait(list(pending), num_returns=1)
            task = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayTaskError as e:
                if isinstance(e.cause, ValueError):     # the options or the input: the user's error, as locally
                    raise e.cause from None
                raise EngineError(failed(task, f"{type(e.cause).__name__}: {e.cause}")) from None
            except ray.exceptions.RayError as e:        # the actor died more than RETRIES times, or never started
                raise EngineError(failed(task, str(e).strip().splitlines()[0])) from None
            if progress is not None:
                progress(len(task.lines))
            yield task, result

    def close(self) -> None:
        for a in self.actors:
            self.ray.kill(a)
        self.actors = []
        self.ray.shutdown()              # embedded: stops Ray; joined: leaves the cluster running
