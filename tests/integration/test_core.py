"""The resolver core through its real tiers: L1, Redis, and the registry (PostgreSQL)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import NamedTuple

import pytest
import redis
import redis.asyncio as aioredis

from idnode.registry.names import PrefixAuthority, normalize
from idnode.registry.store import HandleRecord, Store, open_store
from idnode.resolver import metrics
from idnode.resolver.coalesce import Coalescer
from idnode.resolver.codec import HandleValue, ResponseCode, decode_values, encode_values
from idnode.resolver.codec.codes import Permission, TtlType
from idnode.resolver.core import Resolver
from idnode.resolver.l1 import Entry, L1Cache, Lifetimes
from idnode.resolver.l2 import RedisTier
from idnode.resolver.stages.authority import AuthorityStage
from idnode.resolver.stages.chain import lookup_chain
from idnode.resolver.stages.l1_cache import L1CacheStage
from idnode.resolver.stages.redis_cache import RedisCacheStage
from idnode.resolver.stages.registry_lookup import RegistryStage
from idnode.resolver.stages.stage import Lookup, Resolution, Stage
from tests.integration.beats import Renewals

PUBLIC = HandleValue(1, "URL", b"https://example.cn/1")
SECRET = HandleValue(2, "costPrice", b"99", permissions=int(Permission.ADMIN_READ))


async def _store(url: str, records: list[HandleRecord]) -> Store:
    s = open_store(url)
    await s.open()
    await s.home_prefix("88.166")
    await s.put_many(records)
    return s


class Tiers(NamedTuple):
    """A core over the node's own chain, and the tiers a test looks into."""

    resolver: Resolver
    l1: L1Cache
    l3: Coalescer[str, bytes]  # the registry's batched reads


def _tiers(
    store: Store,
    authority: PrefixAuthority,
    *,
    l2: RedisTier | None = None,
    l1_ttl: float = 60.0,
    negative_ttl: float = 5.0,
    max_batch: int = 256,
    leased: bool = False,
) -> Tiers:
    l1 = L1Cache(64 * 1024 * 1024)
    stages = lookup_chain(
        store, authority, l1, l2, Lifetimes(l1_ttl, negative_ttl), max_batch=max_batch
    )
    registry = stages[-1]
    assert isinstance(registry, RegistryStage)  # the chain ends at the registry
    core = Resolver(stages, case_sensitive=store.case_sensitive, leased=leased)
    return Tiers(core, l1, registry.reads)


def _records(n: int) -> list[HandleRecord]:
    return [HandleRecord(f"88.166.1/h{i}", encode_values([PUBLIC, SECRET])) for i in range(n)]


def test_tiers_fill_and_hit(pg_url: str, redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(3))
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        a = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            r = await a.resolver.resolve("88.166.1/h0")
            assert r.response_code == ResponseCode.SUCCESS
            assert a.l3.batches == 1
            assert len(a.l1) == 1
            await asyncio.sleep(0.05)  # the L2 write is pipelined after the answer
            raw = redis.Redis.from_url(redis_url).get(f"{redis_namespace}:h:{{88.166.1/H0}}")
            assert isinstance(raw, bytes) and raw[:1] == b"\x01"
            # a second worker (its own L1) finds it in Redis, not in SQL
            b = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
            r2 = await b.resolver.resolve("88.166.1/H0")
            assert r2 == r and b.l3.batches == 0
            # and the first worker answers from L1 without any tier
            batches = l2.reads.batches
            assert (await a.resolver.resolve("88.166.1/h0")) == r and l2.reads.batches == batches
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_non_public_values_never_leave_and_filters_are_ored(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        core = _tiers(store, PrefixAuthority(["88.166"]))
        try:
            r = await core.resolver.resolve("88.166.1/h0")
            assert [v.index for v in decode_values(r.values_wire)] == [1]
            r = await core.resolver.resolve("88.166.1/h0", indexes=(2,))
            assert r.response_code == ResponseCode.VALUES_NOT_FOUND
            r = await core.resolver.resolve("88.166.1/h0", types=("URL",), indexes=(99,))
            assert [v.index for v in decode_values(r.values_wire)] == [1]
            r = await core.resolver.resolve("88.166.1/h0", authorized=True)
            assert [v.index for v in decode_values(r.values_wire)] == [1, 2]
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_misses_are_coalesced(pg_url: str, redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(200))
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        core = _tiers(store, PrefixAuthority(["88.166"]), l2=l2, max_batch=256)
        try:
            names = [f"88.166.1/h{i}" for i in range(200)] + ["88.166.1/missing"] * 50
            results = await asyncio.gather(*(core.resolver.resolve(n) for n in names))
            assert sum(r.response_code == ResponseCode.SUCCESS for r in results) == 200
            assert sum(r.response_code == ResponseCode.HANDLE_NOT_FOUND for r in results) == 50
            assert l2.reads.batches == 1  # one MGET for 201 distinct keys
            assert core.l3.batches == 1  # one ANY query
            assert core.l3.keys_fetched == 201
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_not_found_is_cached_so_floods_do_not_reach_sql(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, [])
        core = _tiers(store, PrefixAuthority(["88.166"]), negative_ttl=30)
        try:
            for _ in range(5):
                r = await core.resolver.resolve("88.166.1/none")
                assert r.response_code == ResponseCode.HANDLE_NOT_FOUND
            assert core.l3.batches == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_not_homed_is_refused_before_any_tier(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, [])
        core = _tiers(store, PrefixAuthority(["88.166"]))
        try:
            r = await core.resolver.resolve("99.1/x")
            assert r.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
            assert r.message == "That naming authority doesn't live here"
            assert core.l3.batches == 0
        finally:
            await store.close()

    asyncio.run(go())


def test_value_ttl_bounds_the_l1_entry(pg_url: str) -> None:
    async def go() -> None:
        short = HandleValue(1, "URL", b"x", ttl=0)
        absolute = HandleValue(1, "URL", b"y", ttl=int(time.time()) - 10, ttl_type=TtlType.ABSOLUTE)
        store = await _store(
            pg_url,
            [
                HandleRecord("88.166.1/short", encode_values([short])),
                HandleRecord("88.166.1/abs", encode_values([absolute])),
            ],
        )
        core = _tiers(store, PrefixAuthority(["88.166"]), l1_ttl=60)
        try:
            await core.resolver.resolve("88.166.1/short")
            await core.resolver.resolve("88.166.1/abs")
            await core.resolver.resolve("88.166.1/short")
            await core.resolver.resolve("88.166.1/abs")
            assert core.l3.batches == 4  # TTL 0 and a past absolute TTL are never served from L1
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_down_degrades_to_the_registry(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        l2 = RedisTier("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
        core = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            r = await core.resolver.resolve("88.166.1/h0")
            assert r.response_code == ResponseCode.SUCCESS
            assert l2.errors >= 1
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_registry_down_answers_an_error_not_a_crash(tmp_path: object) -> None:
    async def go() -> None:
        from idnode.registry.migrate import upgrade

        url = f"sqlite:///{tmp_path}/r.db"
        upgrade(url)
        store = open_store(url)
        await store.open()
        core = _tiers(store, PrefixAuthority(["88.166"]))
        await store.close()  # the registry goes away under the resolver
        r = await core.resolver.resolve("88.166.1/x")
        assert r.response_code == ResponseCode.ERROR

    asyncio.run(go())


def test_a_fill_read_before_a_write_cannot_land_after_its_invalidation(
    redis_url: str, redis_namespace: str
) -> None:
    async def go() -> None:
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        r = redis.Redis.from_url(redis_url)
        try:
            await l2.put_many([("88.166.1/K", b"old")])
            assert r.get(l2.data_key("88.166.1/K")) == b"\x01old"
            await l2.invalidate(["88.166.1/K"])  # a write committed
            assert r.get(l2.data_key("88.166.1/K")) is None
            await l2.put_many([("88.166.1/K", b"old")])  # a late fill of what was read before
            assert r.get(l2.data_key("88.166.1/K")) is None
        finally:
            await l2.close()

    asyncio.run(go())


def test_a_read_after_a_write_does_not_join_a_registry_read_from_before_it(pg_url: str) -> None:
    """A lookup of a handle reads the registry; while its answer is on the way back, a
    write commits and is invalidated here. A lookup that starts after that must read the
    registry again, not share the read under way (it holds the old value), and the old
    answer must not be kept in L1."""
    old, new = [PUBLIC], [HandleValue(1, "URL", b"https://example.cn/new")]

    def data(r: Resolution) -> list[bytes]:
        return [v.data for v in decode_values(r.values_wire)]

    async def go() -> None:
        store = await _store(pg_url, [HandleRecord("88.166.1/w", encode_values(old))])
        real = store.get_many
        read, answer = asyncio.Event(), asyncio.Event()
        reads = 0

        async def late_first_answer(keys: Sequence[str]) -> dict[str, bytes]:
            nonlocal reads
            reads += 1
            got = await real(keys)  # PostgreSQL answers now...
            if reads == 1:
                read.set()
                await answer.wait()  # ...the first answer reaches the core late
            return got

        store.get_many = late_first_answer  # type: ignore[method-assign]
        core = _tiers(store, PrefixAuthority(["88.166"]))
        try:
            first = asyncio.get_running_loop().create_task(core.resolver.resolve("88.166.1/w"))
            await read.wait()
            await store.put_many([HandleRecord("88.166.1/w", encode_values(new))])
            await core.resolver.invalidate(["88.166.1/w"])  # the write is acknowledged
            later = asyncio.get_running_loop().create_task(core.resolver.resolve("88.166.1/w"))
            for _ in range(20):  # let it run as far as it goes without the first answer
                await asyncio.sleep(0)
            answer.set()
            got_first, got_later = await first, await later
            assert data(got_first) == [b"https://example.cn/1"]  # started before the write
            assert data(got_later) == [b"https://example.cn/new"]
            assert reads == 2
            again = await core.resolver.resolve("88.166.1/w")  # from L1 now
            assert data(again) == [b"https://example.cn/new"] and reads == 2
        finally:
            await store.close()

    asyncio.run(go())


def test_a_read_after_a_write_does_not_join_a_redis_read_from_before_it(
    pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    """As above, one tier nearer: the MGET under way read Redis before the write's
    tombstone; a lookup after the write asks Redis again (and finds the registry's)."""

    async def go() -> None:
        store = await _store(pg_url, [HandleRecord("88.166.1/w", encode_values([PUBLIC]))])
        read, answer = asyncio.Event(), asyncio.Event()
        mgets = 0

        class LateFirstAnswer(RedisTier):  # real Redis; its first answer held back
            async def _mget(self, keys: list[str]) -> dict[str, bytes]:
                nonlocal mgets
                mgets += 1
                got = await super()._mget(keys)
                if mgets == 1:
                    read.set()
                    await answer.wait()
                return got

        l2 = LateFirstAnswer(redis_url, namespace=redis_namespace)
        await l2.put_many([(normalize("88.166.1/w"), encode_values([PUBLIC]))])  # the old
        core = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
        new = HandleValue(1, "URL", b"https://example.cn/new")
        try:
            first = asyncio.get_running_loop().create_task(core.resolver.resolve("88.166.1/w"))
            await read.wait()
            await store.put_many([HandleRecord("88.166.1/w", encode_values([new]))])
            await core.resolver.invalidate(["88.166.1/w"])
            later = asyncio.get_running_loop().create_task(core.resolver.resolve("88.166.1/w"))
            for _ in range(20):
                await asyncio.sleep(0)
            answer.set()
            assert [v.data for v in decode_values((await first).values_wire)] == [PUBLIC.data]
            assert [v.data for v in decode_values((await later).values_wire)] == [new.data]
            assert mgets == 2
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_l1_answers_only_within_the_listeners_lease(pg_url: str) -> None:
    """A leased core (a node with Redis) answers from L1 only until the time its
    listener's last beat allows; past it, lookups read on (and say so), and a beat heard
    back lets L1 answer again."""

    async def go() -> None:
        store = await _store(pg_url, _records(1))
        core = _tiers(store, PrefixAuthority(["88.166"]), leased=True)
        reads = core.l3
        key = core.resolver.key("88.166.1/h0")
        lapsed = metrics.LEASE_LAPSED._value.get()
        try:
            await core.resolver.resolve("88.166.1/h0")  # in L1 now
            assert len(core.l1) == 1
            assert core.resolver.recall(key) is None  # no beat heard yet: no lease
            fetched = reads.keys_fetched
            await core.resolver.resolve("88.166.1/h0")
            assert reads.keys_fetched == fetched + 1  # read on, past L1
            core.resolver.renew(time.monotonic() + 3600)
            assert core.resolver.recall(key) is not None
            await core.resolver.resolve("88.166.1/h0")
            assert reads.keys_fetched == fetched + 1  # from L1
            core.resolver.renew(time.monotonic() - 1)  # an older beat moves nothing back
            assert core.resolver.recall(key) is not None
            lapse = time.monotonic() + 0.05
            core.resolver._lease_until = lapse  # as if the last beat was that long ago
            while time.monotonic() <= lapse:
                await asyncio.sleep(0.01)
            assert core.resolver.recall(key) is None
            await core.resolver.resolve("88.166.1/h0")
            assert reads.keys_fetched == fetched + 2
            assert metrics.LEASE_LAPSED._value.get() >= lapsed + 3
        finally:
            await store.close()

    asyncio.run(go())


def test_the_listener_renews_the_lease_with_each_beat_it_hears_back(
    redis_url: str, redis_namespace: str
) -> None:
    """Each beat (a PING on the subscribed connection, every BEAT_EVERY) that comes back
    renews the lease to its send time + LEASE; redis-py's own PONGs renew nothing."""

    async def go() -> None:
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        renewals = Renewals()
        subscribed = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            l2.listen(
                lambda keys, position: None,
                subscribed.set,
                None,
                renewals,
            )
        )
        try:
            await asyncio.wait_for(subscribed.wait(), 10)
            await renewals.check()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await l2.close()

    asyncio.run(go())


async def _kill_listeners(r: aioredis.Redis, namespace: str) -> int:
    """Drop this namespace's listener connections from the server side (CLIENT KILL, as
    a proxy, a failover or a timeout would): by the name they carry, so that no other
    test's connection on a shared Redis goes."""
    killed = 0
    for c in await r.client_list(_type="pubsub"):
        if c.get("name") == f"idnode-listener:{namespace}":
            killed += int(await r.client_kill_filter(_id=c["id"]))
    return killed


async def _until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = 20.0) -> None:
    """Wait for a state that must come (a bound on a hang, not a timing assertion)."""
    async with asyncio.timeout(seconds):
        while not await check():
            await asyncio.sleep(0.05)


def test_a_dropped_subscription_is_reported_closed_and_beats_again_while_confirming(
    redis_url: str, redis_namespace: str
) -> None:
    """The server drops the listener's connection while its reader is busy confirming an
    invalidation. The beats meet the dead connection: the gap must be reported (lost, so
    the core catches up from the change feed), the subscription made anew and the lease
    renewed again; and only one subscriber stays (an orphan would make every writer
    wait ACK_WAIT for a confirmation that never comes)."""

    async def go() -> None:
        gate, confirming = asyncio.Event(), asyncio.Event()

        class SlowConfirm(RedisTier):  # real Redis; the reader held inside a confirmation
            async def _confirm(self, ack: str) -> None:
                confirming.set()
                await gate.wait()
                await super()._confirm(ack)

        tier = SlowConfirm(redis_url, namespace=redis_namespace)
        r: aioredis.Redis = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
        renewals: list[float] = []
        lost: list[float] = []
        subscribed = asyncio.Event()
        task = asyncio.get_running_loop().create_task(
            tier.listen(
                lambda keys, position: None,
                subscribed.set,
                lambda: lost.append(time.monotonic()),
                renewals.append,
            )
        )
        try:
            await asyncio.wait_for(subscribed.wait(), 10)
            await _until(lambda: _true(bool(renewals)), "a first beat")
            await r.publish(tier.channel, "@ack:review\n88.166.1/K")
            await asyncio.wait_for(confirming.wait(), 10)
            subscribed.clear()
            assert await _kill_listeners(r, redis_namespace) == 1
            await _until(lambda: _true(bool(lost)), "the gap reported")
            gate.set()
            await asyncio.wait_for(subscribed.wait(), 10)
            after = len(renewals)
            await _until(lambda: _true(len(renewals) > after), "beats renewing the lease again")

            async def one_subscriber() -> bool:
                counts = dict(await r.pubsub_numsub(tier.channel))
                return bool(counts.get(tier.channel.encode(), 0) == 1)

            await _until(one_subscriber, "a single subscriber")
        finally:
            gate.set()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await r.aclose()
            await tier.close()

    asyncio.run(go())


async def _true(value: bool) -> bool:
    return value


def test_invalidation_reaches_other_workers_l1(
    pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        a_l2 = RedisTier(redis_url, namespace=redis_namespace)
        b_l2 = RedisTier(redis_url, namespace=redis_namespace)
        a = _tiers(store, PrefixAuthority(["88.166"]), l2=a_l2)
        b = _tiers(store, PrefixAuthority(["88.166"]), l2=b_l2)
        listener = asyncio.get_running_loop().create_task(b_l2.listen(b.resolver.forget))
        try:
            await b.resolver.resolve("88.166.1/h0")
            assert len(b.l1) == 1
            await asyncio.sleep(0.2)  # the listener has subscribed
            await a.resolver.invalidate(["88.166.1/h0"])
            for _ in range(50):
                if len(b.l1) == 0:
                    break
                await asyncio.sleep(0.02)
            assert len(b.l1) == 0
        finally:
            listener.cancel()
            await a_l2.close()
            await b_l2.close()
            await store.close()

    asyncio.run(go())


def test_redis_fills_run_one_at_a_time_batch_meanwhile_and_are_capped(
    pg_url: str, redis_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While one fill is under way the next ones queue and go as one batch; past
    MAX_QUEUED_FILLS they are skipped (a fill is an optimisation, not data)."""
    import idnode.resolver.stages.redis_cache as redis_stage

    monkeypatch.setattr(redis_stage, "MAX_QUEUED_FILLS", 5)
    calls: list[int] = []
    gate = asyncio.Event()

    class HeldFirstFill(RedisTier):  # real Redis; only the first fill is held back
        async def put_many(self, items: list[tuple[str, bytes | None]]) -> None:  # type: ignore[override]
            calls.append(len(items))
            if len(calls) == 1:
                await gate.wait()
            await super().put_many(items)

    async def go() -> None:
        store = await _store(pg_url, _records(20))
        l2 = HeldFirstFill(redis_url, namespace=redis_namespace)
        core = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            await core.resolver.resolve("88.166.1/h0")
            await asyncio.sleep(0.05)
            assert calls == [1]
            for i in range(1, 20):
                assert (
                    await core.resolver.resolve(f"88.166.1/h{i}")
                ).response_code == ResponseCode.SUCCESS
            await asyncio.sleep(0.05)
            assert calls == [1]  # nothing else started while the first fill is held
            gate.set()
            await asyncio.sleep(0.2)
            assert calls == [1, 5]  # the queued fills as one batch, cut at the cap
            r = redis.Redis.from_url(redis_url)
            cached = [i for i in range(20) if r.exists(f"{redis_namespace}:h:{{88.166.1/H{i}}}")]
            assert cached == [0, 1, 2, 3, 4, 5]
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_redis_fills_wait_for_others_to_join_them(
    pg_url: str, redis_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fill waits FILL_DELAY for the misses after it: misses one after another (a light
    load) go to Redis as one script call, not one each."""
    import idnode.resolver.stages.redis_cache as redis_stage

    monkeypatch.setattr(redis_stage, "FILL_DELAY", 3600)  # only drain() sends them here
    calls: list[int] = []

    class CountedFills(RedisTier):  # real Redis; the fills' batch sizes noted
        async def put_many(self, items: list[tuple[str, bytes | None]]) -> None:  # type: ignore[override]
            calls.append(len(items))
            await super().put_many(items)

    async def go() -> None:
        store = await _store(pg_url, _records(5))
        l2 = CountedFills(redis_url, namespace=redis_namespace)
        core = _tiers(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            for i in range(5):  # each awaited before the next is asked
                r = await core.resolver.resolve(f"88.166.1/h{i}")
                assert r.response_code == ResponseCode.SUCCESS
            assert calls == []  # none has gone yet
            stage = next(st for st in core.resolver.stages if isinstance(st, RedisCacheStage))
            await stage.drain()  # as at shutdown: the fills still waiting go, together
            assert calls == [5]
            r2 = redis.Redis.from_url(redis_url)
            assert all(r2.exists(f"{redis_namespace}:h:{{88.166.1/H{i}}}") for i in range(5))
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


class Tap(Stage):
    """A stage of the test's own: notes each handle that reaches it and passes it on."""

    def __init__(self, name: str, seen: list[tuple[str, str]]) -> None:
        self.name = name
        self.seen = seen

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        self.seen.append((self.name, q.key))
        return None


class Pinned(Stage):
    """Answers one handle itself (as a referral stage would) and passes the rest."""

    def __init__(self, key: str, values_wire: bytes, lifetimes: Lifetimes) -> None:
        self.key = key
        self.values_wire = values_wire
        self.lifetimes = lifetimes

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        if q.key != self.key:
            return None
        return self.lifetimes.entry(self.values_wire, time.monotonic())


def test_a_chain_of_ones_own_is_walked_in_order(
    tmp_path: object, redis_url: str, redis_namespace: str
) -> None:
    """Stages inserted between the node's own are asked in list order, over the real
    tiers (SQLite registry, Redis); an answer ends the walk, and only the stages it
    passed learn it."""

    async def go() -> None:
        from idnode.registry.migrate import upgrade

        url = f"sqlite:///{tmp_path}/r.db"
        upgrade(url)
        store = await _store(url, _records(2))
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        lifetimes = Lifetimes()
        seen: list[tuple[str, str]] = []
        pinned = encode_values([HandleValue(1, "URL", b"https://pinned.example")])

        def worker() -> tuple[Resolver, L1Cache, RegistryStage]:
            l1, registry = L1Cache(1 << 20), RegistryStage(store, lifetimes)
            chain = [
                L1CacheStage(l1),
                Tap("after L1", seen),
                AuthorityStage(PrefixAuthority(["88.166"])),
                Tap("after authority", seen),
                Pinned("88.166.1/PINNED", pinned, lifetimes),
                RedisCacheStage(l2, lifetimes),
                Tap("after Redis", seen),
                registry,
            ]
            return Resolver(chain, case_sensitive=store.case_sensitive), l1, registry

        a, a_l1, a_registry = worker()
        b, _, b_registry = worker()
        h0 = "88.166.1/H0"
        try:
            r = await a.resolve("88.166.1/h0")
            assert r.response_code == ResponseCode.SUCCESS
            assert seen == [("after L1", h0), ("after authority", h0), ("after Redis", h0)]
            assert a_registry.reads.batches == 1 and len(a_l1) == 1
            await asyncio.sleep(0.05)  # the Redis fill goes out after the answer

            seen.clear()  # another worker: Redis answers, the stages after it are not asked
            assert await b.resolve("88.166.1/h0") == r
            assert seen == [("after L1", h0), ("after authority", h0)]
            assert b_registry.reads.batches == 0

            seen.clear()  # L1 answers first, synchronously too
            assert a.cached("88.166.1/h0") is not None
            assert await a.resolve("88.166.1/h0") == r and seen == []

            seen.clear()  # the authority stage ends the walk for a prefix not homed here
            r = await a.resolve("99.1/x")
            assert r.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
            assert seen == [("after L1", "99.1/X")]

            seen.clear()  # a stage of one's own answers: L1 before it learns, Redis does not
            mgets = l2.reads.batches
            assert a.cached("88.166.1/pinned") is None
            r = await a.resolve("88.166.1/pinned")
            assert [v.data for v in decode_values(r.values_wire)] == [b"https://pinned.example"]
            assert seen == [("after L1", "88.166.1/PINNED"), ("after authority", "88.166.1/PINNED")]
            assert a.cached("88.166.1/pinned") is not None
            await asyncio.sleep(0.05)
            assert l2.reads.batches == mgets and a_registry.reads.batches == 1
            assert not redis.Redis.from_url(redis_url).exists(l2.data_key("88.166.1/PINNED"))
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_concurrent_writes_are_invalidated_together_and_every_key_reaches_the_others(
    pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    """Forty writes committing at once: fewer invalidations than writes (one PUBLISH
    and one round of confirmations per batch), and when each write's call returns its
    key is gone from Redis and from another worker's L1."""

    async def go() -> None:
        n = 40
        store = await _store(pg_url, _records(n))
        a_l2 = RedisTier(redis_url, namespace=redis_namespace)
        b_l2 = RedisTier(redis_url, namespace=redis_namespace)
        a = _tiers(store, PrefixAuthority(["88.166"]), l2=a_l2)
        b = _tiers(store, PrefixAuthority(["88.166"]), l2=b_l2)
        listener = asyncio.get_running_loop().create_task(b_l2.listen(b.resolver.forget))
        raw = redis.Redis.from_url(redis_url)
        try:
            handles = [f"88.166.1/h{i}" for i in range(n)]
            keys = {h: normalize(h, store.case_sensitive) for h in handles}
            for h in handles:  # in Redis (filled by a) and in b's L1
                await a.resolver.resolve(h)
                await b.resolver.resolve(h)
            assert len(b.l1) == n
            for _ in range(250):  # Redis fills are written behind the answer
                if all(raw.exists(a_l2.data_key(keys[h])) for h in handles):
                    break
                await asyncio.sleep(0.02)
            assert all(raw.exists(a_l2.data_key(keys[h])) for h in handles)
            await asyncio.sleep(0.2)  # the listener has subscribed

            async def write(h: str) -> None:
                await a.resolver.invalidate([h])
                # once the call returns, nobody may serve the old value
                assert not raw.exists(a_l2.data_key(keys[h]))
                assert b.l1.get(keys[h], time.monotonic()) is None

            await asyncio.gather(*(write(h) for h in handles))
            batches = a.resolver.invalidations
            assert batches.writes == n
            assert batches.batches < n
            assert len(b.l1) == 0
        finally:
            listener.cancel()
            raw.close()
            await a_l2.close()
            await b_l2.close()
            await store.close()

    asyncio.run(go())


def test_an_invalidation_of_many_keys_tombstones_and_deletes_every_one_and_publishes_once(
    redis_url: str, redis_namespace: str
) -> None:
    """More keys than one script call takes (TELL_BATCH): every key is tombstoned and
    deleted, and the channel gets one message naming them all."""
    from idnode.resolver.l2 import TELL_BATCH

    async def go() -> None:
        tier = RedisTier(redis_url, namespace=redis_namespace)
        raw = redis.Redis.from_url(redis_url)
        sub = raw.pubsub()  # type: ignore[no-untyped-call]
        try:
            keys = [f"88.166.1/K{i}" for i in range(2 * TELL_BATCH + 7)]
            raw.mset({tier.data_key(k): b"\x01old" for k in keys})
            sub.subscribe(tier.channel)
            assert sub.get_message(timeout=2)["type"] == "subscribe"
            heard, failure = await tier._tell(keys, "\n".join(["@ack:x", *keys]))
            assert (heard, failure) == (1, None)
            assert not any(raw.exists(tier.data_key(k)) for k in keys)
            assert all(raw.exists(tier.tombstone_key(k)) for k in keys)
            message = sub.get_message(timeout=2)
            assert message is not None and message["data"].decode().split("\n")[1:] == keys
            assert sub.get_message(timeout=0.2) is None  # one message, not one per call
        finally:
            sub.close()
            raw.close()
            await tier.close()

    asyncio.run(go())


def test_redis_that_answers_nothing_is_probed_not_asked_each_miss(
    redis_url: str, redis_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One node, cold: Redis answers none of its reads, so only one miss in PROBE_EVERY
    asks it (the others go straight on, counted as skipped); once the probes find what
    other nodes filled, every miss asks again. Fills go on throughout."""
    from idnode.resolver import metrics
    from idnode.resolver.stages import redis_cache

    monkeypatch.setattr(redis_cache, "READ_WINDOW", 64)
    monkeypatch.setattr(redis_cache, "PROBE_EVERY", 4)

    async def go() -> None:
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        stage = RedisCacheStage(l2, Lifetimes())

        def q(i: int) -> Lookup:
            return Lookup(f"88.166.1/K{i}", f"88.166.1/K{i}")

        try:
            for i in range(64):  # a window of misses: below MIN_HIT_RATIO
                assert await stage.lookup(q(i)) is None
            assert stage.probing
            mgets, skipped = l2.reads.batches, metrics.TALLY.cache[metrics.L2_SKIPPED]
            for i in range(64, 72):
                assert await stage.lookup(q(i)) is None
            assert l2.reads.batches - mgets == 2  # one in four asked Redis
            assert metrics.TALLY.cache[metrics.L2_SKIPPED] - skipped == 6

            # Other nodes fill Redis; the probes find it, and every miss asks again.
            values = encode_values([HandleValue(1, "URL", b"https://filled.example")])
            await l2.put_many([(q(i).key, values) for i in range(1000, 1300)])
            for i in range(1000, 1300):
                if not stage.probing:
                    break
                await stage.lookup(q(i))
            assert not stage.probing
            got = await stage.lookup(q(1299))
            assert isinstance(got, Entry) and got.values_wire == values

            # A fill learnt while probing still reaches Redis.
            stage.learn(q(5), Lifetimes().entry(values, 0.0))
            await stage.drain()
            assert await l2.get(q(5).key) is not None
        finally:
            await l2.close()

    asyncio.run(go())
