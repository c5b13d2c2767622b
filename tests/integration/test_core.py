"""The resolver core through its real tiers: L1, Redis, and the registry (PostgreSQL)."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis

from idnode.registry.names import PrefixAuthority
from idnode.registry.store import HandleRecord, Store, open_store
from idnode.resolver.codec import HandleValue, ResponseCode, decode_values, encode_values
from idnode.resolver.codec.codes import Permission, TtlType
from idnode.resolver.core import Resolver
from idnode.resolver.l2 import RedisTier

PUBLIC = HandleValue(1, "URL", b"https://example.cn/1")
SECRET = HandleValue(2, "costPrice", b"99", permissions=int(Permission.ADMIN_READ))


async def _store(url: str, records: list[HandleRecord]) -> Store:
    s = open_store(url)
    await s.open()
    await s.home_prefix("88.166")
    await s.put_many(records)
    return s


def _records(n: int) -> list[HandleRecord]:
    return [HandleRecord(f"88.166.1/h{i}", encode_values([PUBLIC, SECRET])) for i in range(n)]


def test_tiers_fill_and_hit(pg_url: str, redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(3))
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        a = Resolver(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            r = await a.resolve("88.166.1/h0")
            assert r.response_code == ResponseCode.SUCCESS
            assert a.l3.batches == 1
            assert len(a.l1) == 1
            await asyncio.sleep(0.05)  # the L2 write is pipelined after the answer
            raw = redis.Redis.from_url(redis_url).get(f"{redis_namespace}:h:{{88.166.1/H0}}")
            assert isinstance(raw, bytes) and raw[:1] == b"\x01"
            # a second worker (its own L1) finds it in Redis, not in SQL
            b = Resolver(store, PrefixAuthority(["88.166"]), l2=l2)
            r2 = await b.resolve("88.166.1/H0")
            assert r2 == r and b.l3.batches == 0
            # and the first worker answers from L1 without any tier
            batches = l2.reads.batches
            assert (await a.resolve("88.166.1/h0")) == r and l2.reads.batches == batches
        finally:
            await l2.close()
            await store.close()

    asyncio.run(go())


def test_non_public_values_never_leave_and_filters_are_ored(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        core = Resolver(store, PrefixAuthority(["88.166"]))
        try:
            r = await core.resolve("88.166.1/h0")
            assert [v.index for v in decode_values(r.values_wire)] == [1]
            r = await core.resolve("88.166.1/h0", indexes=(2,))
            assert r.response_code == ResponseCode.VALUES_NOT_FOUND
            r = await core.resolve("88.166.1/h0", types=("URL",), indexes=(99,))
            assert [v.index for v in decode_values(r.values_wire)] == [1]
            r = await core.resolve("88.166.1/h0", authorized=True)
            assert [v.index for v in decode_values(r.values_wire)] == [1, 2]
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_misses_are_coalesced(pg_url: str, redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(200))
        l2 = RedisTier(redis_url, namespace=redis_namespace)
        core = Resolver(store, PrefixAuthority(["88.166"]), l2=l2, max_batch=256)
        try:
            names = [f"88.166.1/h{i}" for i in range(200)] + ["88.166.1/missing"] * 50
            results = await asyncio.gather(*(core.resolve(n) for n in names))
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
        core = Resolver(store, PrefixAuthority(["88.166"]), negative_ttl=30)
        try:
            for _ in range(5):
                r = await core.resolve("88.166.1/none")
                assert r.response_code == ResponseCode.HANDLE_NOT_FOUND
            assert core.l3.batches == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_not_homed_is_refused_before_any_tier(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, [])
        core = Resolver(store, PrefixAuthority(["88.166"]))
        try:
            r = await core.resolve("99.1/x")
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
        core = Resolver(store, PrefixAuthority(["88.166"]), l1_ttl=60)
        try:
            await core.resolve("88.166.1/short")
            await core.resolve("88.166.1/abs")
            await core.resolve("88.166.1/short")
            await core.resolve("88.166.1/abs")
            assert core.l3.batches == 4  # TTL 0 and a past absolute TTL are never served from L1
        finally:
            await store.close()

    asyncio.run(go())


def test_redis_down_degrades_to_the_registry(pg_url: str) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        l2 = RedisTier("redis://127.0.0.1:1/0", timeout=0.2)  # nothing listens on port 1
        core = Resolver(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            r = await core.resolve("88.166.1/h0")
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
        core = Resolver(store, PrefixAuthority(["88.166"]))
        await store.close()  # the registry goes away under the resolver
        r = await core.resolve("88.166.1/x")
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


def test_invalidation_reaches_other_workers_l1(
    pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    async def go() -> None:
        store = await _store(pg_url, _records(1))
        a_l2 = RedisTier(redis_url, namespace=redis_namespace)
        b_l2 = RedisTier(redis_url, namespace=redis_namespace)
        a = Resolver(store, PrefixAuthority(["88.166"]), l2=a_l2)
        b = Resolver(store, PrefixAuthority(["88.166"]), l2=b_l2)
        listener = asyncio.get_running_loop().create_task(b_l2.listen(b.forget))
        try:
            await b.resolve("88.166.1/h0")
            assert len(b.l1) == 1
            await asyncio.sleep(0.2)  # the listener has subscribed
            await a.invalidate(["88.166.1/h0"])
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
    import idnode.resolver.core as core_module

    monkeypatch.setattr(core_module, "MAX_QUEUED_FILLS", 5)
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
        core = Resolver(store, PrefixAuthority(["88.166"]), l2=l2)
        try:
            await core.resolve("88.166.1/h0")
            await asyncio.sleep(0.05)
            assert calls == [1]
            for i in range(1, 20):
                assert (await core.resolve(f"88.166.1/h{i}")).response_code == 1
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
