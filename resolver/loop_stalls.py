"""Stalls of a worker's event loop: measured always, traced on request.

Every answer a worker gives waits behind whatever its loop runs at that moment, so one
callback that holds the loop for 200 ms is 200 ms on every answer in flight: the p99 of
an open-loop run. A latency histogram cannot tell such a stop from a queue (on the 10M
miss path, slow seconds first blamed on stops were the load test replaying keys; this
probe showed there were none). Two tools:

* :class:`LagProbe` (always on): a task that asks to wake every :data:`PERIOD` seconds
  and records how late it woke into ``idnode_event_loop_lag_seconds``. A lateness of
  :data:`STALL` or more counts in ``idnode_event_loop_stalls_total`` and is logged (at
  most one line per :data:`LOG_EVERY` seconds, with how many were left unsaid).
* :class:`StallTracer` (``--stall-trace-ms N``, off by default): a thread that logs the
  loop thread's Python stack when the loop has not ticked for N ms, once per stall: the
  code that held the loop. It costs a thread wake-up every N/4 ms and a probe tick every
  N/2 ms, so it is a diagnostic, not a default. A stall it cannot attribute (the process
  itself not scheduled, or C code holding the GIL until the stall ends) still shows as
  lag, with a stack taken when the GIL came back or none.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from prometheus_client import Counter, Histogram

log = logging.getLogger("idnode.loop")

PERIOD = 0.1  # seconds between the probe's wake-ups (without a tracer)
STALL = 0.1  # a wake-up this late or later is a stall
LOG_EVERY = 10.0  # at most one stall line per this many seconds
STACK_LIMIT = 25  # innermost frames of a traced stack

LOOP_LAG = Histogram(
    "idnode_event_loop_lag_seconds",
    "How late the event loop ran a timer it was asked to run: time every answer in "
    "flight waited behind other work",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)
LOOP_STALLS = Counter(
    "idnode_event_loop_stalls_total",
    f"Event loop wake-ups {STALL * 1000:.0f} ms or more late",
)


class LagProbe:
    """Measures the loop's lateness; ``last_tick`` is what a :class:`StallTracer` reads."""

    def __init__(self, period: float = PERIOD) -> None:
        self.period = period
        self.last_tick = time.monotonic()
        self._unsaid = 0
        self._said_at = -LOG_EVERY

    def tick(self, late: float) -> None:
        """One wake-up, ``late`` seconds after it was due."""
        now = time.monotonic()
        self.last_tick = now
        LOOP_LAG.observe(late)
        if late < STALL:
            return
        LOOP_STALLS.inc()
        if now - self._said_at < LOG_EVERY:
            self._unsaid += 1
            return
        log.warning(
            "the event loop stalled %.0f ms: every answer in flight waited that long%s",
            late * 1000,
            f" ({self._unsaid} more stalls since the last line)" if self._unsaid else "",
        )
        self._said_at, self._unsaid = now, 0

    async def run(self) -> None:
        clock = time.monotonic
        while True:
            due = clock() + self.period
            await asyncio.sleep(self.period)
            self.last_tick = clock()  # at once: a tracer must not see a tick as a stall
            self.tick(max(0.0, self.last_tick - due))


class StallTracer:
    """A thread that logs the loop thread's stack once per stall of ``threshold_ms``."""

    def __init__(self, probe: LagProbe, threshold_ms: float) -> None:
        self.probe = probe
        self.threshold = threshold_ms / 1000
        self.loop_thread = threading.get_ident()  # built on the loop's thread
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-tracer", daemon=True)
        self.traced = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def stack(self) -> str:
        frame = sys._current_frames().get(self.loop_thread)
        if frame is None:
            return "(the loop's thread has no Python frame)"
        return "".join(traceback.format_stack(frame, limit=STACK_LIMIT))

    def _watch(self) -> None:
        reported = 0.0  # the tick whose stall was reported
        while not self._stop.wait(self.threshold / 4):
            tick = self.probe.last_tick
            held = time.monotonic() - tick
            if held < self.threshold or tick == reported:
                continue
            reported = tick
            self.traced += 1
            log.warning(
                "the event loop has not run a timer for %.0f ms; it was running:\n%s",
                held * 1000,
                self.stack(),
            )


def start_probe(trace_ms: float) -> tuple[asyncio.Task[None], StallTracer | None]:
    """The probe as a task of the running loop, and a tracer when ``trace_ms`` > 0 (the
    probe then ticks often enough that a quiet loop never looks stalled)."""
    probe = LagProbe(min(PERIOD, trace_ms / 2000) if trace_ms > 0 else PERIOD)
    task = asyncio.get_running_loop().create_task(probe.run())
    tracer = None
    if trace_ms > 0:
        tracer = StallTracer(probe, trace_ms)
        tracer.start()
    return task, tracer
