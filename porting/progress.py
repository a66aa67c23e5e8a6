"""The one progress display of every long job: a tqdm bar on a terminal; elsewhere (a log, a pipe, CI)
a short line at most every INTERVAL_S seconds; nothing under -q (the package's loggers at WARNING).

The lines are written here rather than by tqdm: tqdm redraws one line with carriage returns, which a
log file keeps as a single ever-growing line."""
from __future__ import annotations

import logging
import sys
import time

INTERVAL_S = 10.0


class _Lines:
    """update(n) as work finishes; a line "desc: done/total unit (pct), rate, time left" every INTERVAL_S."""

    def __init__(self, total: int, desc: str, unit: str, stream):
        self.total, self.desc, self.unit, self.stream = total, desc, unit, stream
        self.done, self.started = 0, time.monotonic()
        self.last = self.started

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= INTERVAL_S and self.done < self.total:
            self.last = now
            rate = self.done / max(now - self.started, 1e-9)
            left = (self.total - self.done) / rate if rate else float("inf")
            print(f"{self.desc}: {self.done}/{self.total} {self.unit}s ({self.done / self.total:.0%}), "
                  f"{rate:.1f} {self.unit}s/s, about {left:.0f} s left", file=self.stream, flush=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Nothing:
    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def progress_bar(total: int, desc: str, unit: str = "line", stream=None):
    """Call update(n) as n more units finish. None for a single item, or under -q."""
    stream = stream or sys.stderr
    if total <= 1 or not logging.getLogger("porting").isEnabledFor(logging.INFO):
        return _Nothing()
    if stream.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False, file=stream)
    return _Lines(total, desc, unit, stream)
