"""Stage timers for the speed benchmarks: wall seconds per named stage of a pipeline, off by default.

``evaluate`` and ``Localizer.localize`` mark their stages (``decode``, ``audio``, ``explain``,
``score``; ``overlay``, ``encode``...) with :data:`STAGES`. Nothing is measured unless a caller
turns it on (``benchmarks/pipeline_speed.py``)::

    with profiling.timing(sync=True) as times:    # sync: torch.cuda.synchronize() at each edge
        evaluate(opts)
    times.totals()                                # {"decode": 1.2, "audio": 0.4, ...} seconds

When off, a stage costs one attribute test. ``sync=True`` waits for the GPU at each stage's
start and end, so a stage's time includes its queued kernels (asynchronous launches would
otherwise bill them to whichever stage next waits); it is for timing runs only, as it stops the
CPU from running ahead of the GPU. Stages may be timed from several threads (localize's reader
and writer); each thread's seconds add to the stage's total, so totals of concurrent stages may
sum to more than the wall time.
"""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager


class StageTimes:
    """Seconds and call counts per stage name; see the module docstring."""

    def __init__(self):
        self.enabled, self.sync = False, False
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._calls: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._calls.clear()

    def add(self, name: str, seconds: float) -> None:
        with self._lock:
            self._seconds[name] += seconds
            self._calls[name] += 1

    def _wait_for_device(self) -> None:
        if self.sync:
            import torch

            if torch.cuda.is_available() and torch.cuda.is_initialized():
                torch.cuda.synchronize()

    @contextmanager
    def stage(self, name: str):
        """Time the block as stage ``name`` (nothing when timing is off)."""
        if not self.enabled:
            yield
            return
        self._wait_for_device()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._wait_for_device()
            self.add(name, time.perf_counter() - start)

    def iterate(self, name: str, iterable):
        """Yield ``iterable``'s items, timing each wait for the next one as stage ``name``."""
        it = iter(iterable)
        while True:
            if self.enabled:
                start = time.perf_counter()
                item = next(it, _DONE)
                self.add(name, time.perf_counter() - start)
            else:
                item = next(it, _DONE)
            if item is _DONE:
                return
            yield item

    def totals(self) -> dict[str, float]:
        with self._lock:
            return dict(self._seconds)

    def calls(self) -> dict[str, int]:
        with self._lock:
            return dict(self._calls)


_DONE = object()

STAGES = StageTimes()
"""The process's stage timers (the pipelines mark their stages here)."""


@contextmanager
def timing(sync: bool = False):
    """Turn the stage timers on (from zero) for the block; yields :data:`STAGES`."""
    STAGES.reset()
    STAGES.enabled, STAGES.sync = True, bool(sync)
    try:
        yield STAGES
    finally:
        STAGES.enabled, STAGES.sync = False, False
