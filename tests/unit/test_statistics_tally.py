"""The per-worker statistics tally (registry/statistics.py): what counts where, the
bound on distinct prefix texts, and a flush that maps to homed prefixes, gives counts
back when the registry fails and drops them when the outcome is unknown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from idnode.registry import statistics
from idnode.registry.names import PrefixAuthority
from idnode.registry.statistics import UsageTally, flush
from idnode.registry.store import CommitUnknown, Counts, StoreError


class FakeStore:
    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.added: list[tuple[str, list[Counts]]] = []

    async def add_statistics(self, day: str, counts: Sequence[Counts]) -> None:
        if self.fail is not None:
            raise self.fail
        self.added.append((day, sorted(counts)))


def test_counts_by_prefix() -> None:
    t = UsageTally()
    t.resolved("88.166/a", 1)
    t.resolved("88.166/b", 100)  # not found: an error
    t.resolved("88.166.1001/x", 302)  # a referral is an answer, not an error
    t.resolved("0.NA/88.166", 1)  # a prefix lookup counts under the prefix
    t.registered("88.166/a")
    t.refused("88.166/c")
    day, got = t.take()
    assert day == statistics.utc_day()
    assert got == {"88.166": (1, 3, 2), "88.166.1001": (0, 1, 0)}
    assert not t and t.take()[1] == {}


def test_distinct_prefixes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(statistics, "MAX_KEYS", 3)
    auth = PrefixAuthority(["88.166"])
    t = UsageTally()
    t.homed_of = lambda p: statistics.homed_prefix(auth, p)
    for i in range(10):
        t.resolved(f"junk{i}/x", 1)  # past the bound and not homed: not kept
    t.resolved("88.166.5/x", 1)  # past the bound: kept under its homed prefix
    t.resolved("88.166.5/x", 1)
    _, got = t.take()
    assert len(got) == 4 and got["88.166"] == (0, 2, 0)


def test_flush_maps_gives_back_and_drops() -> None:
    auth = PrefixAuthority(["88.166", "88.166.2002"])
    t = UsageTally()
    for h in ("88.166/a", "88.166.1001/x", "88.166.2002/y", "99/z"):
        t.resolved(h, 1)
    store: Any = FakeStore()
    assert asyncio.run(flush(store, auth, t)) == 2
    ((_, rows),) = store.added
    assert rows == [("88.166", 0, 2, 0), ("88.166.2002", 0, 1, 0)]  # 99 is not homed

    t.registered("88.166/b")
    failing: Any = FakeStore(StoreError("down"))
    with pytest.raises(StoreError):
        asyncio.run(flush(failing, auth, t))
    assert t.take()[1] == {"88.166": (1, 0, 0)}  # kept for the next flush

    t.registered("88.166/c")
    unknown: Any = FakeStore(CommitUnknown("gone during COMMIT"))
    assert asyncio.run(flush(unknown, auth, t)) == 0
    assert not t  # maybe stored: never added twice
