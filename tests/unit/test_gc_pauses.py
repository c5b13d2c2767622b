"""The collector's pauses: L1 entries stay out of its way, and its time is measured."""

from __future__ import annotations

import gc

from prometheus_client import REGISTRY

from idnode.resolver import gc_pauses
from idnode.resolver.l1 import Entry, L1Cache


def test_l1_entries_are_not_walked_by_the_collector() -> None:
    """Held as Entries (a tuple subclass), every L1 entry was a container the collector
    walked on each full collection; held as plain tuples of atomic fields, it untracks
    them once it has seen them."""
    c = L1Cache(max_bytes=10_000_000)
    for i in range(1000):
        c.put(f"88.166/K{i}", Entry(b"v" * 40 if i % 3 else None, bool(i % 2), 1e12 + i))
    gc.collect()
    held = list(c._d.values())  # the cache's own storage: what the collector would walk
    assert len(held) == 1000
    assert not any(gc.is_tracked(h) for h in held)
    # What callers get back is still an Entry with the fields that were put.
    got = c.get("88.166/K5", 0.0)
    assert isinstance(got, Entry)
    assert got == Entry(b"v" * 40, True, 1e12 + 5)
    assert c.get("88.166/K3", 0.0) == Entry(None, True, 1e12 + 3)


def _sample(name: str, generation: str) -> float:
    return REGISTRY.get_sample_value(name, {"generation": generation}) or 0.0


def test_collections_are_timed_per_generation() -> None:
    gc_pauses.record_pauses()
    gc_pauses.record_pauses()  # once per process, however often it is asked
    assert gc.callbacks.count(gc_pauses.TALLY.callback) == 1
    gc_pauses.TALLY.flush()
    before_count = _sample("idnode_gc_pause_seconds_count", "2")
    before_seconds = _sample("idnode_gc_seconds_total", "2")
    gc.collect()
    gc.collect()
    gc_pauses.TALLY.flush()
    assert _sample("idnode_gc_pause_seconds_count", "2") == before_count + 2
    assert _sample("idnode_gc_seconds_total", "2") > before_seconds


def test_pauses_held_between_flushes_are_bounded() -> None:
    tally = gc_pauses.PauseTally()
    for _ in range(gc_pauses.MAX_HELD_PAUSES + 50):
        tally.callback("start", {"generation": 1})
        tally.callback("stop", {"generation": 1})
    assert len(tally.pauses) == gc_pauses.MAX_HELD_PAUSES
    assert tally.seconds[1] > 0  # every pause still counts in the total
