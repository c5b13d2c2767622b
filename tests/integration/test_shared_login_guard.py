"""The login guard's failures counted in a real Redis (registry/login_guard.py with
shared_limits.SharedFailures): two guards stand for two workers; with Redis gone each
throttles on its own, logged once and counted."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis.asyncio as aioredis

from idnode.loadtest.processes import free_port
from idnode.registry.auth import Identity
from idnode.registry.login_guard import LoginGuard, SharedCounts, Throttled
from idnode.registry.shared_limits import FALLBACKS, Shared

WHO = Identity("0.NA/88.166", 300)


async def _read(counts: SharedCounts | None) -> None:
    """Wait for the readings a guard asked for (they run off the request path)."""
    assert counts is not None
    await asyncio.gather(*list(counts.failures.shared.gate._asking))


def test_failures_on_one_worker_throttle_the_other(redis_url: str, redis_namespace: str) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            one, two = (
                LoginGuard(
                    failures=3,
                    identity_failures=50,
                    interval=600.0,
                    shared=Shared(client, redis_namespace, "auth-failures"),
                )
                for _ in range(2)
            )
            assert one.shared_clients is not None
            # a success costs nothing shared
            one.admit("192.0.2.1", WHO)
            one.passed("192.0.2.1", WHO)
            assert await one.shared_clients.failures.left("192.0.2.1") == 3.0
            for _ in range(3):
                one.admit("192.0.2.1", WHO)
                await one.failed("192.0.2.1", WHO, "test", "wrong password")
            with pytest.raises(Throttled):
                one.admit("192.0.2.1", WHO)
            # the other worker: its first try, before it has read the count, is admitted
            # (and counted: a debt); once read, it refuses
            two.admit("192.0.2.1", WHO)
            await _read(two.shared_clients)
            await two.failed("192.0.2.1", WHO, "test", "wrong password")
            assert await one.shared_clients.failures.left("192.0.2.1") == pytest.approx(
                -1.0, abs=0.01
            )  # refilled 1/600 a second
            with pytest.raises(Throttled) as refused:
                two.admit("192.0.2.1", WHO)
            assert refused.value.retry_after > 600  # the debt is paid back first
            # another address on the other worker is still admitted, and the identity's
            # count (4 failures of 50) was shared too
            two.admit("192.0.2.2", WHO)
            await _read(two.shared_identities)
            assert two.shared_identities is not None
            assert await two.shared_identities.failures.left("300:0.NA/88.166") == pytest.approx(
                46.0, abs=0.01
            )
        finally:
            await client.aclose()

    asyncio.run(go())


def test_redis_down_each_worker_throttles_on_its_own(caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0")  # nothing there
        try:
            guard = LoginGuard(
                failures=3,
                identity_failures=50,
                interval=600.0,
                shared=Shared(client, "idnode-test-down", "auth-failures"),
            )
            before = FALLBACKS.labels("auth-failures")._value.get()
            for _ in range(3):
                guard.admit("192.0.2.9", WHO)
                await guard.failed("192.0.2.9", WHO, "test", "wrong password")
            with pytest.raises(Throttled):
                guard.admit("192.0.2.9", WHO)
            assert FALLBACKS.labels("auth-failures")._value.get() > before
        finally:
            await client.aclose()

    with caplog.at_level(logging.WARNING, logger="idnode.limits"):
        asyncio.run(go())
    said = [r.getMessage() for r in caplog.records if "does not answer" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith("auth-failures: redis does not answer"), said
