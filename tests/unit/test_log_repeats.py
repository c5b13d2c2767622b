"""logs.Repeats: a message a failing part repeats on every request is logged once per
interval, with how many were held back (issue 12: 3,909 identical warnings in a 15 s
Redis outage)."""

from __future__ import annotations

import logging
import time

import pytest

from idnode.resolver.logs import Repeats


def test_repeats_are_summarised_once_per_interval(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: clock[0])
    r = Repeats(logging.getLogger("test.repeats"), interval=10.0)
    with caplog.at_level(logging.WARNING, logger="test.repeats"):
        for i in range(3909):  # 15 s of a warning per read
            clock[0] = 100.0 + i * 15.0 / 3909
            r.warning("redis read failed (%s); serving from the registry", f"error {i}")
        r.warning("another message (%s)", "x")  # counted on its own
    lines = [rec.getMessage() for rec in caplog.records]
    assert lines[0] == "redis read failed (error 0); serving from the registry"
    assert len(lines) == 3  # the first, one summary after 10 s, the other message
    assert lines[1].endswith("(2605 more since the last such line)")
    assert lines[2] == "another message (x)"
