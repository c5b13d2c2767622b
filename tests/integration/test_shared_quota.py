"""Per-prefix quotas counted in a real Redis (registry/shared_limits.py): seeded from
the registry's count, reserved and settled, reconciled only when exact, and the
worker's own count when Redis does not answer."""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path

import asyncpg
import pytest
import redis.asyncio as aioredis

from idnode.loadtest.processes import free_port
from idnode.registry.quotas import Quotas
from idnode.registry.shared_limits import Shared, SharedQuota

from .test_registry_service import ALICE, URL, service, set_prefix_admin


def test_reserve_settle_reconcile(redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        registry = {"n": 3}  # what the registry counts under the prefix

        async def count(prefix: str) -> int:
            return registry["n"]

        try:
            one = Quotas(0, {"88.166": 5}, refresh=0.0)
            two = Quotas(0, {"88.166": 5}, refresh=0.0)
            for q in (one, two):  # two workers, one count
                q.shared = SharedQuota(Shared(client, redis_namespace, "quota"))
            r = await one.reserve("88.166", 5, count)
            assert r is not None and r.shared and r.granted == 2  # seeded from 3
            assert (await two.reserve("88.166", 1, count)).granted == 0  # type: ignore[union-attr]
            await one.settle(r, 1)  # one registered, one given back
            registry["n"] = 4
            r2 = await two.reserve("88.166", 3, count)
            assert r2 is not None and r2.granted == 1
            # in flight: a reconcile now would not be exact, so it is not applied
            registry["n"] = 0
            assert (await one.reserve("88.166", 1, count)).granted == 0  # type: ignore[union-attr]
            await two.settle(r2, 0)  # the write failed: its reservation comes back
            registry["n"] = 4
            r3 = await one.reserve("88.166", 1, count)
            assert r3 is not None and r3.granted == 1
            await one.settle(r3, 1)
            # quiet now: handles deleted around the node count at the next reconcile
            registry["n"] = 1
            r4 = await two.reserve("88.166", 10, count)
            assert r4 is not None and r4.granted == 4
            await two.settle(r4, 0)
            assert await one.reserve("88.167", 1, count) is None  # no quota there
        finally:
            await client.aclose()

    asyncio.run(go())


def test_redis_down_falls_back_to_the_workers_count(redis_namespace: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing there

        async def count(prefix: str) -> int:
            return 3

        q = Quotas(0, {"88.166": 5})
        q.shared = SharedQuota(Shared(client, f"{redis_namespace}-{secrets.token_hex(2)}", "q"))
        r = await q.reserve("88.166", 5, count)
        assert r is not None and not r.shared and r.granted == 2
        assert not q.shared.shared.up()  # asked again after RETRY_SECONDS
        await q.settle(r, 0)
        r = await q.reserve("88.166", 5, count)
        assert r is not None and r.granted == 2
        await client.aclose()

    asyncio.run(go())


def test_a_batch_failing_after_its_reservation_gives_it_back(
    pg_url: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    """A batch whose audit insert fails (a real PostgreSQL error, raised by a trigger)
    after its quota was reserved in Redis settles the reservation all the same: nothing
    stays in flight, and the prefix keeps its room."""

    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        quotas = Quotas(0, {"88.166.1001": 5}, refresh=0.0)
        quotas.shared = SharedQuota(Shared(client, redis_namespace, "quota"))
        store, svc, _ = await service(pg_url, tmp_path, quotas=quotas)
        db = await asyncpg.connect(pg_url)
        key = f"{redis_namespace}:lim:quota:{{88.166.1001}}"
        try:
            await set_prefix_admin(svc, 0x0FFF)
            await db.execute(
                "CREATE FUNCTION refuse_audit() RETURNS trigger LANGUAGE plpgsql AS"
                " $$BEGIN RAISE EXCEPTION 'audit_log refuses this row'; END$$;"
                " CREATE TRIGGER refuse_audit BEFORE INSERT ON audit_log FOR EACH ROW"
                " WHEN (NEW.handle ILIKE '88.166.1001/refused%') EXECUTE FUNCTION refuse_audit()"
            )
            batch = [("88.166.1001/ok-1", (URL,)), ("88.166.1001/refused-1", (URL, URL))]
            with pytest.raises(asyncpg.PostgresError, match="refuses this row"):
                await svc.batch_create(batch, ALICE)
            held = await client.hgetall(key)
            assert held[b"inflight"] == b"0" and held[b"used"] == b"0", held
            await db.execute("DROP TRIGGER refuse_audit ON audit_log")
            results = await svc.batch_create(
                [(f"88.166.1001/ok-{i}", (URL,)) for i in range(5)], ALICE
            )
            assert [r.code for r in results] == [1] * 5  # the whole room is still there
        finally:
            await db.close()
            await store.close()
            await client.aclose()

    asyncio.run(go())
