"""L1's eviction (CLOCK: a hit marks its entry, a full cache gives marked entries a
second chance) and the check a kept answer makes of it (``holds``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from idnode.registry.migrate import upgrade
from idnode.registry.store import HandleRecord, open_store
from idnode.resolver.changefeed import ChangeLog
from idnode.resolver.codec import HandleValue, encode_values
from idnode.resolver.core import Resolver
from idnode.resolver.l1 import SECOND_CHANCES, Entry, L1Cache, Lifetimes
from idnode.resolver.stages.l1_cache import L1CacheStage
from idnode.resolver.stages.registry_lookup import RegistryStage

VALUE = b"x" * 100
FOREVER = 1e12


def _full(n: int) -> tuple[L1Cache, list[str]]:
    """A cache holding exactly ``n`` entries of one size: the next put evicts."""
    keys = [f"k{i:03d}" for i in range(n)]
    probe = L1Cache(1 << 20)
    probe.put(keys[0], Entry(VALUE, True, FOREVER))
    c = L1Cache(probe.bytes_used * n)
    for k in keys:
        c.put(k, Entry(VALUE, True, FOREVER))
    assert len(c) == n
    return c, keys


def test_an_entry_used_since_it_was_put_outlives_older_unused_ones() -> None:
    c, keys = _full(10)
    assert c.get(keys[0], 0) is not None  # the oldest, now used
    c.put("n001", Entry(VALUE, True, FOREVER))
    c.put("n002", Entry(VALUE, True, FOREVER))
    assert c.get(keys[0], 0) is not None  # sent round once instead of evicted
    assert c.get(keys[1], 0) is None and c.get(keys[2], 0) is None  # the unused went
    assert len(c) == 10


def test_the_second_chance_is_one_each_time_an_entry_comes_round() -> None:
    c, keys = _full(4)
    c.get(keys[0], 0)
    for i in range(3):  # keys[0] goes round, unmarked, ahead of n000; keys[1..3] go
        c.put(f"n{i:03d}", Entry(VALUE, True, FOREVER))
    assert list(c._d) == [keys[0], "n000", "n001", "n002"]
    assert c.get(keys[0], 0) is not None  # marked again
    for i in range(3, 6):  # keys[0] goes round once more; n000..n002 go
        c.put(f"n{i:03d}", Entry(VALUE, True, FOREVER))
        assert keys[0] in c._d
    assert list(c._d) == [keys[0], "n003", "n004", "n005"]
    c.put("n006", Entry(VALUE, True, FOREVER))  # unused since it went round: it goes
    assert c.get(keys[0], 0) is None
    assert len(c) == 4


def test_a_cache_whose_entries_are_all_used_evicts_after_a_bounded_walk() -> None:
    n = SECOND_CHANCES * 3
    c, keys = _full(n)
    for k in keys:
        c.get(k, 0)
    c.put("n000", Entry(VALUE, True, FOREVER))
    # The first SECOND_CHANCES went round; the next one went, used as it was.
    assert len(c) == n and c.bytes_used <= c.max_bytes
    assert c.get(keys[SECOND_CHANCES], 0) is None
    assert all(c.get(k, 0) is not None for k in keys[:SECOND_CHANCES])
    assert c.get("n000", 0) is not None


def test_a_put_never_evicts_the_entry_it_puts() -> None:
    """Even when every entry is used and the spared ones fill the whole cache."""
    for n in (1, 4, SECOND_CHANCES, SECOND_CHANCES + 1):
        c, _ = _full(n)
        for round_ in range(3):
            for k in list(c._d):
                c.get(k, 0)
            new = f"n{round_:03d}"
            c.put(new, Entry(VALUE, True, FOREVER))
            assert c.get(new, 0) is not None, (n, round_)
            assert len(c) == n and c.bytes_used <= c.max_bytes
    big, _ = _full(4)  # one entry the size of the whole cache: everything else goes
    for k in list(big._d):
        big.get(k, 0)
    big.put("huge", Entry(b"z" * (big.max_bytes - 204), True, FOREVER))
    assert big.get("huge", 0) is not None and len(big) == 1


def test_holds_is_the_very_values_object_of_a_live_entry() -> None:
    c = L1Cache(1 << 20)
    values = bytes(VALUE)
    c.put("k", Entry(values, True, 5.0))
    assert c.holds("k", values, 1.0)
    assert not c.holds("k", bytes(bytearray(values)), 1.0)  # equal, but another object
    assert not c.holds("other", values, 1.0)
    c.put("none", Entry(None, True, 5.0))  # "does not exist" is held as None
    assert c.holds("none", None, 1.0) and not c.holds("k", None, 1.0)
    assert not c.holds("k", values, 5.0)  # expired: and dropped
    assert len(c) == 1 and c.get("k", 0.0) is None
    c.put("k", Entry(values, True, 5.0))
    c.invalidate("k")
    assert not c.holds("k", values, 1.0)


def test_holds_marks_the_entry_used_as_a_get_does() -> None:
    c, keys = _full(3)
    e = c.get(keys[1], 0)  # marked
    assert e is not None and e.values_wire is not None
    held = c._d[keys[0]][0]  # the values object a kept answer of keys[0] would hold
    assert c.holds(keys[0], held, 0)
    c.put("n000", Entry(VALUE, True, FOREVER))  # keys[0], keys[1] went round; keys[2] went
    assert c.get(keys[2], 0) is None
    assert c.holds(keys[0], held, 0)


def test_the_core_holds_nothing_while_its_caches_are_not_trusted(tmp_path: Path) -> None:
    """A kept answer is sent only while recall would give the same entry: never while the
    worker has not caught up from the change feed (its caches unused), nor after an
    invalidation."""

    async def go() -> None:
        db = f"sqlite:///{tmp_path}/r.db"
        upgrade(db)
        store = open_store(db)
        await store.open()
        await store.home_prefix("88.166")
        url = HandleValue(index=1, type="URL", data=b"https://example.com/")
        await store.put_many([HandleRecord("88.166/A", encode_values([url]))])
        l1 = L1Cache(1 << 20)
        core = Resolver(
            [L1CacheStage(l1), RegistryStage(store, Lifetimes())],
            changes=ChangeLog(store),  # as with Redis: untrusted until the channel listens
        )
        try:
            key = core.key("88.166/a")
            got = await core.entry("88.166/A")
            assert isinstance(got, Entry) and got.values_wire is not None
            assert not core.holds(key, got.values_wire)  # not caught up: nothing cached
            core.listener_subscribed()
            assert await core.in_step(10.0)
            e = await core.entry("88.166/A")  # read and kept in L1 now
            assert isinstance(e, Entry) and e.values_wire is not None
            assert core.holds(key, e.values_wire)
            assert not core.holds(key, got.values_wire)  # an older read's object
            core.forget([key])
            assert not core.holds(key, e.values_wire)
            core.listener_lost()
            assert not core.holds(key, e.values_wire)
        finally:
            await core.drain()
            await store.close()

    asyncio.run(go())
