"""The garbage collector's pauses: kept short, and measured.

A full (generation 2) collection walks every container object the worker holds. At
start-up that is the imported modules, classes and settings (~90k objects); under load
it used to be every L1 entry too. Measured on the 10M-identifier miss path, such a
collection stopped the worker for 40-130 ms every few seconds, and those stops were
the p99 (280 ms at 20k lookups/s offered). Two things keep them short:

* :func:`freeze_start_up` moves what start-up made into the permanent generation
  (``gc.freeze``): it lives as long as the worker and no collection needs to look at
  it again;
* the L1 keeps plain tuples of atomic fields, which the collector untracks
  (see ``idnode.resolver.l1``).

:func:`record_pauses` counts every collection's time, per generation, into
``idnode_gc_seconds_total`` and the full ones into ``idnode_gc_pause_seconds``, so an
operator sees a regression. The callback runs inside whatever allocation triggered the
collection, possibly while prometheus-client holds its (non-reentrant) lock: it only
adds to plain numbers, flushed with the rest of the hot path's tallies.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

from prometheus_client import Counter, Histogram

log = logging.getLogger("idnode.gc")

GC_SECONDS = Counter(
    "idnode_gc_seconds_total",
    "Time this worker spent in the garbage collector, by generation collected",
    ["generation"],
)
GC_PAUSES = Histogram(
    "idnode_gc_pause_seconds",
    "Pauses of the collections of generations 1 and 2 (generation 0's are counted only)",
    ["generation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25),
)
MAX_HELD_PAUSES = 1000  # pauses of generations 1-2 kept between flushes; more are counted only


class PauseTally:
    """What the callback saw since the last flush, in plain numbers."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        took = time.perf_counter() - self._started
        generation = info["generation"]
        self.seconds[generation] += took
        if generation and len(self.pauses) < MAX_HELD_PAUSES:
            self.pauses.append((generation, took))

    def flush(self) -> None:
        seconds, self.seconds = self.seconds, [0.0, 0.0, 0.0]
        pauses, self.pauses = self.pauses, []
        for generation, s in enumerate(seconds):
            if s:
                GC_SECONDS.labels(str(generation)).inc(s)
        for generation, took in pauses:
            GC_PAUSES.labels(str(generation)).observe(took)


TALLY = PauseTally()


def record_pauses() -> None:
    """Count the collector's time from now on (once per process)."""
    if TALLY.callback not in gc.callbacks:
        gc.callbacks.append(TALLY.callback)


def freeze_start_up() -> None:
    """Collect what start-up left behind, then keep the rest out of every later
    collection. Call once, in a worker process, when it is ready to serve."""
    started = time.perf_counter()
    gc.collect()
    gc.freeze()
    log.debug(
        "froze %d start-up objects out of the collector's way in %.0f ms",
        gc.get_freeze_count(),
        (time.perf_counter() - started) * 1000,
    )
