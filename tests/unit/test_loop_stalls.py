"""The event loop's stalls: the probe counts late wake-ups and logs them without
flooding the log; the tracer names the code that held the loop, once per stall."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
from prometheus_client import REGISTRY

from idnode.resolver import loop_stalls
from idnode.resolver.loop_stalls import LagProbe, start_probe


def stalls() -> float:
    return REGISTRY.get_sample_value("idnode_event_loop_stalls_total") or 0.0


def test_late_wake_ups_count_as_stalls_and_are_logged_sparingly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = LagProbe()
    before = stalls()
    with caplog.at_level(logging.WARNING, "idnode.loop"):
        probe.tick(0.002)  # on time, near enough: measured, not a stall
        assert stalls() == before and not caplog.records
        probe.tick(0.25)
        probe.tick(0.3)  # within LOG_EVERY of the first line: counted, not said
        probe.tick(0.4)
    assert stalls() == before + 3
    assert len(caplog.records) == 1
    assert "stalled 250 ms" in caplog.records[0].getMessage()
    probe._said_at -= loop_stalls.LOG_EVERY  # the next line is due: it says what it skipped
    with caplog.at_level(logging.WARNING, "idnode.loop"):
        probe.tick(0.15)
    assert "(2 more stalls since the last line)" in caplog.records[-1].getMessage()


def hold_the_loop(seconds: float) -> None:
    time.sleep(seconds)  # blocking, as a slow callback would be


def test_the_tracer_logs_the_stack_that_held_the_loop(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> int:
        task, tracer = start_probe(20)
        assert tracer is not None
        try:
            await asyncio.sleep(0.05)  # the probe ticks
            hold_the_loop(0.5)
            await asyncio.sleep(0.05)  # the overdue timer runs: the stall ends
        finally:
            task.cancel()
            tracer.stop()
        return tracer.traced

    before = stalls()
    with caplog.at_level(logging.WARNING, "idnode.loop"):
        traced = asyncio.run(go())
    stacks = [r.getMessage() for r in caplog.records if "has not run a timer" in r.getMessage()]
    assert traced >= 1 and len(stacks) == traced
    assert any("hold_the_loop" in s and "time.sleep" in s for s in stacks), stacks
    assert stalls() >= before + 1  # and the probe counted it when the loop came back


def test_without_a_tracer_there_is_no_thread() -> None:
    async def go() -> None:
        task, tracer = start_probe(0)
        assert tracer is None
        task.cancel()

    asyncio.run(go())
