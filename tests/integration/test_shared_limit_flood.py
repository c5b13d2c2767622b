"""Shared limits under a flood of distinct (spoofed) client addresses, on a private
redis-server whose INFO commandstats counts every call: a client seen once costs Redis
nothing, and clients that do use their allowance cost at most the gate's calls at once,
on at most the gate's connections (registry/shared_limits.py Gate, limits_client)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from typing import Any, cast

import pytest
import redis

from idnode.registry.login_guard import LoginGuard
from idnode.registry.shared_limits import BUSY, CALLS_IN_FLIGHT, Gate, Shared, limits_client
from idnode.resolver.ratelimit import SharedRateLimiter

from ..services import start_redis

FLOOD = 20_000  # distinct source addresses
YIELD_EVERY = 500  # packets handled between two turns of the loop (a busy UDP door)


@pytest.fixture(scope="module")
def private_redis() -> Iterator[str]:
    """A redis-server of this module's own: nobody else's calls in its counts."""
    shared = os.environ.pop("IDNODE_TEST_REDIS_URL", None)
    try:
        url, stop = start_redis()
    finally:
        if shared is not None:
            os.environ["IDNODE_TEST_REDIS_URL"] = shared
    try:
        yield url
    finally:
        stop()


def evals(admin: redis.Redis) -> int:
    stats = cast(dict[str, Any], admin.info("commandstats"))
    return int(stats.get("cmdstat_eval", {}).get("calls", 0))


def addresses(n: int, start: int = 0) -> list[str]:
    return [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}" for i in range(start, start + n)]


def test_a_flood_of_new_addresses_costs_redis_bounded_work(private_redis: str) -> None:
    admin = redis.Redis.from_url(private_redis)
    admin.config_resetstat()

    async def go() -> None:
        gate = Gate()
        client = limits_client(private_redis, cluster=False, timeout=1.0)
        shared = Shared(client, "flood", "rate", gate)
        limiter = SharedRateLimiter(5.0, 10.0, shared, "rate")  # chunk: 2
        try:
            # One packet from each of FLOOD addresses: decided here, no call to Redis.
            for n, addr in enumerate(addresses(FLOOD)):
                assert limiter.allow(addr)
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            assert not gate._asking
            assert evals(admin) == 0

            # Three from each of FLOOD others (past a chunk: each would ask for a lease).
            busy = BUSY.labels("rate")._value.get()
            turns = 0
            most = 0
            for n, addr in enumerate(addresses(FLOOD, FLOOD) * 3):
                limiter.allow(addr)
                most = max(most, len(gate._asking))
                if n % YIELD_EVERY == 0:
                    turns += 1
                    await asyncio.sleep(0)
                    clients = cast(dict[str, Any], admin.info("clients"))["connected_clients"]
                    assert clients <= CALLS_IN_FLIGHT + 1, clients  # + this admin client
            await asyncio.gather(*gate._asking)
            assert most <= CALLS_IN_FLIGHT
            # Each turn of the loop starts at most a gate's worth of calls.
            assert 0 < evals(admin) <= CALLS_IN_FLIGHT * (turns + 1)
            assert BUSY.labels("rate")._value.get() > busy  # the rest: this worker's count
        finally:
            await client.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())


def test_a_flood_of_new_addresses_at_the_login_guard_costs_redis_nothing(
    private_redis: str,
) -> None:
    admin = redis.Redis.from_url(private_redis)
    admin.config_resetstat()

    async def go() -> None:
        client = limits_client(private_redis, cluster=False, timeout=1.0)
        guard = LoginGuard(failures=3, interval=60.0, shared=Shared(client, "flood", "auth"))
        try:
            for n, addr in enumerate(addresses(FLOOD)):
                guard.admit(addr)  # an attempt; the check itself is not made here
                if n % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            assert guard.shared_clients is not None
            await asyncio.gather(*guard.shared_clients.failures.shared.gate._asking)
            assert evals(admin) == 0
            # A failure is counted in Redis (one call) and read back with it.
            guard.admit("192.0.2.7")
            await guard.failed("192.0.2.7", "client 192.0.2.7", "test", "wrong password")
            assert evals(admin) == 1
        finally:
            await client.aclose()  # type: ignore[attr-defined]

    asyncio.run(go())
