"""Small parts of the node: names, authority, L1, the coalescer, settings, the health check."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from idnode.registry.names import InvalidName, PrefixAuthority, check_handle, normalize, prefix_of
from idnode.resolver.coalesce import Coalescer
from idnode.resolver.l1 import Entry, L1Cache
from idnode.resolver.settings import ConfigError, load_settings


def test_names() -> None:
    assert normalize("88.166.1001/abc-é") == "88.166.1001/ABC-é"  # ASCII letters only
    assert normalize("88.1/abc", case_sensitive=True) == "88.1/abc"
    assert prefix_of("88.166.1001/x/y") == "88.166.1001"
    assert prefix_of("0.NA/88.166") == "88.166"
    check_handle("88.166.1001/ABC-123")
    for bad in ("", "88.1", "88.1/", "/x", "88.1/a\x00b", "8/" + "x" * 300):
        with pytest.raises(InvalidName):
            check_handle(bad)


def test_authority_covers_derived_prefixes() -> None:
    a = PrefixAuthority(["88.166"])
    assert a.serves("88.166/x") and a.serves("88.166.1001/x") and a.serves("88.166.1.2.3/x")
    assert not a.serves("88.1660/x") and not a.serves("88.16/x") and not a.serves("0")
    assert a.serves("0.NA/88.166.1001")


def test_l1_is_bounded_in_bytes_and_honours_expiry() -> None:
    c = L1Cache(max_bytes=10_000)
    for i in range(100):
        c.put(f"k{i}", Entry(b"x" * 100, True, 1e9))
    assert c.bytes_used <= 10_000 and len(c) < 100
    # the oldest, never used, went first
    assert c.get("k99", 0) is not None and c.get("k0", 0) is None
    c.put("t", Entry(b"y", True, 5.0))
    assert c.get("t", 4.9) is not None and c.get("t", 5.0) is None
    c.put("huge", Entry(b"z" * 20_000, True, 1e9))
    assert c.get("huge", 0) is None  # larger than the whole cache: not kept


def test_coalescer_batches_a_loop_turn_and_shares_duplicates() -> None:
    calls: list[list[str]] = []

    async def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        await asyncio.sleep(0)
        return {k: k.upper() for k in keys if k != "missing"}

    async def go() -> None:
        c: Coalescer[str, str] = Coalescer(fetch, max_batch=3)
        got = await asyncio.gather(*(c.get(k) for k in ["a", "b", "a", "c", "d", "missing"]))
        assert got == ["A", "B", "A", "C", "D", None]
        assert calls == [["a", "b", "c"], ["d", "missing"]]

    asyncio.run(go())


def test_coalescer_with_a_fetch_under_way_batches_what_arrives_meanwhile() -> None:
    calls: list[list[str]] = []
    release = asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        if len(calls) == 1:
            await release.wait()  # the first fetch is slow
        return {k: k.upper() for k in keys}

    async def go() -> None:
        c: Coalescer[str, str] = Coalescer(fetch, max_batch=100, max_inflight=1)
        first = c.get("a")
        await asyncio.sleep(0)  # the first batch goes out alone
        # one key per loop turn, as open-loop requests arrive: they must wait, together
        later = []
        for k in "bcdef":
            later.append(c.get(k))
            await asyncio.sleep(0)
        assert calls == [["a"]]
        release.set()
        assert await first == "A"
        assert await asyncio.gather(*later) == ["B", "C", "D", "E", "F"]
        assert calls == [["a"], ["b", "c", "d", "e", "f"]]
        # unbounded (the default) sends one fetch per turn instead
        calls.clear()
        u: Coalescer[str, str] = Coalescer(fetch, max_batch=100)
        got = []
        for k in "xyz":
            got.append(u.get(k))
            await asyncio.sleep(0)
        assert await asyncio.gather(*got) == ["X", "Y", "Z"]
        assert calls == [["x"], ["y"], ["z"]]

    asyncio.run(go())


def test_coalescer_in_flight_bound_yields_to_a_full_batch() -> None:
    calls: list[list[str]] = []
    release = asyncio.Event()

    async def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        await release.wait()
        return {k: k for k in keys}

    async def go() -> None:
        c: Coalescer[str, str] = Coalescer(fetch, max_batch=2, max_inflight=1)
        futs = [c.get("a")]
        for _ in range(5):  # let the first fetch start (wait_for runs it as a task)
            await asyncio.sleep(0)
        futs += [c.get("b"), c.get("c")]  # a full batch goes out despite the bound
        for _ in range(5):
            await asyncio.sleep(0)
        assert calls == [["a"], ["b", "c"]]
        release.set()
        assert await asyncio.gather(*futs) == ["a", "b", "c"]

    asyncio.run(go())


def test_coalescer_bounds_the_wait() -> None:
    async def slow(keys: list[str]) -> dict[str, str]:
        if "a" in keys:
            await asyncio.sleep(10)
        return {k: k.upper() for k in keys}

    async def go() -> None:
        c: Coalescer[str, str] = Coalescer(slow, timeout=0.05, max_inflight=1)
        with pytest.raises(TimeoutError):
            await c.get("a")
        # the timed-out fetch is over and counted out: the next key is fetched, and "a"
        # is asked again rather than left waiting on the abandoned fetch
        assert await c.get("b") == "B"
        assert c._running == 0 and not c._inflight
        with pytest.raises(TimeoutError):
            await c.get("a")

    asyncio.run(go())


def test_coalescer_after_forget_asks_again_instead_of_joining_a_fetch_under_way() -> None:
    """A write committed while a fetch of its key was under way: that fetch may carry the
    old value, so an ask after the write's forget goes out on its own."""
    calls: list[list[str]] = []
    held = asyncio.Event()
    value = {"a": "old", "b": "old"}

    async def fetch(keys: list[str]) -> dict[str, str]:
        calls.append(keys)
        got = {k: value[k] for k in keys}  # read now...
        if len(calls) == 1:
            await held.wait()  # ...answered late
        return got

    async def go() -> None:
        c: Coalescer[str, str] = Coalescer(fetch, max_batch=100)
        before = c.get("a")
        joined = c.get("b")
        for _ in range(3):  # the first fetch is under way, holding "old"
            await asyncio.sleep(0)
        assert calls == [["a", "b"]]
        value["a"] = "new"  # the write commits...
        c.forget(["a"])  # ...and is heard
        after = c.get("a")
        assert after is not before
        assert await after == "new"
        assert c.get("b") is joined  # a key nobody wrote still joins the fetch under way
        held.set()
        assert await before == "old"  # asked before the write: either answer is right
        assert await joined == "old"
        # the late fetch's end did not take the later one's place: nothing is left
        assert not c._inflight and calls == [["a", "b"], ["a"]]
        # forget_all: every key under way is asked again
        held.clear()
        calls.clear()
        first = c.get("x")
        for _ in range(3):
            await asyncio.sleep(0)
        assert calls == [["x"]]
        c.forget_all()
        value["x"] = "x2"
        assert await c.get("x") == "x2"
        held.set()
        await first

    value["x"] = "x1"
    asyncio.run(go())


def test_settings_precedence(tmp_path: Path) -> None:
    cfg = tmp_path / "idnode.toml"
    cfg.write_text('[idnode]\nhttp_port = 9000\nworkers = 3\nredis_url = "redis://file"\n')
    env = {"IDNODE_WORKERS": "4", "IDNODE_CASE_SENSITIVE": "yes"}
    s = load_settings({"workers": "5", "listen": None}, env=env, config_file=cfg)
    assert (s.http_port, s.workers, s.redis_url, s.case_sensitive, s.listen) == (
        9000,
        5,
        "redis://file",
        True,
        "127.0.0.1",
    )
    assert load_settings({}, env=env, config_file=cfg).workers == 4


def test_settings_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="IDNODE_HTTP_PORT"):
        load_settings({}, env={"IDNODE_HTTP_PORT": "eighty"})
    bad = tmp_path / "bad.toml"
    bad.write_text("nope = 1\n")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_settings({}, env={}, config_file=bad)
    with pytest.raises(ConfigError, match="workers"):
        load_settings({"workers": 0}, env={})
    with pytest.raises(ConfigError, match="database_pool_size"):
        load_settings({}, env={"IDNODE_DATABASE_POOL_SIZE": "0"})
    assert load_settings({}, env={"IDNODE_DATABASE_POOL_SIZE": "32"}).database_pool_size == 32


def test_rate_limiter_buckets() -> None:
    from idnode.resolver.ratelimit import RateLimiter

    r = RateLimiter(rate=10, burst=3, max_clients=2)
    assert [r.allow("a", now=0.0) for _ in range(4)] == [True, True, True, False]
    assert r.allow("a", now=0.1)  # one token back after 100 ms at 10/s
    assert not r.allow("a", now=0.1)
    assert r.allow("b", now=0.1) and r.allow("c", now=0.1)
    assert len(r._buckets) == 2  # the idlest client was forgotten


def test_quota_parsing() -> None:
    from idnode.registry.quotas import Quotas

    assert Quotas.parse(0, "") is None
    q = Quotas.parse(100, "88.166.1001=5, 88.166.1002=0")
    assert q is not None and q.limit("88.166.1001") == 5 and q.limit("88.166.9") == 100
    assert q.limit("88.166.1002") == 0
    with pytest.raises(ValueError, match="PREFIX=COUNT"):
        Quotas.parse(0, "88.166.1001")


def test_health_check_reads_the_parts_the_node_hands_it(tmp_path: Path) -> None:
    """The core holds no tiers: the node gives the health check its store, Redis,
    authority and L1, and the report comes from those."""
    from idnode.registry.migrate import upgrade
    from idnode.registry.store import open_store
    from idnode.resolver.health import HealthCheck
    from idnode.resolver.l2 import RedisTier

    async def go() -> None:
        url = f"sqlite:///{tmp_path}/r.db"
        upgrade(url)
        store = open_store(url)
        await store.open()
        l1 = L1Cache(max_bytes=10_000)
        l1.put("88.166/X", Entry(b"x", True, 1e12))
        dead = RedisTier("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
        try:
            report = await HealthCheck(store, dead, PrefixAuthority(["88.166"]), l1).check()
            assert report["status"] == "ok" and report["registry"] == "ok"
            assert str(report["redis"]).startswith("degraded")
            assert report["homed_prefixes"] == ["88.166"] and report["l1_entries"] == 1
            await store.close()  # the registry goes away: the node is unavailable
            report = await HealthCheck(store, None, PrefixAuthority(), l1).check()
            assert report["status"] == "unavailable" and "redis" not in report
        finally:
            await dead.close()

    asyncio.run(go())
