"""A burst of checks of one credential against a real registry (SQLite and PostgreSQL):
checked once, never throttled; different guesses are still throttled one try each; a
proven secret is trusted for PROVEN_SECONDS only (registry/proven_secrets.py)."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from idnode.registry.api_keys import create_api_key
from idnode.registry.auth import Identity
from idnode.registry.credentials import Credentials
from idnode.registry.login_guard import LoginGuard, Throttled
from idnode.registry.service import RegistryService
from idnode.registry.store import Store
from idnode.resolver.codec import HandleValue, ResponseCode
from tests.integration.sealed_registry import ADMIN, SECRET, registry

CLIENT = "127.0.0.1"
BURST = 50


def credentials(svc: RegistryService, proven_seconds: float) -> Credentials:
    """The registry's credentials, with a guard of 10 tries that refill only after the
    test (so what it refuses does not depend on how fast the test runs)."""
    made = Credentials(svc.store, svc.audit, svc.sealer, proven_seconds=proven_seconds)
    made.guard = LoginGuard(svc.audit, failures=10, identity_failures=100, interval=600.0)
    return made


def count_calls(monkeypatch: pytest.MonkeyPatch, store: Store, name: str) -> list[tuple[Any, ...]]:
    """Record each call of the store's ``name``; the real database still answers."""
    real: Callable[..., Awaitable[Any]] = getattr(store, name)
    calls: list[tuple[Any, ...]] = []

    async def counted(*args: Any) -> Any:
        calls.append(args)
        return await real(*args)

    monkeypatch.setattr(store, name, counted)
    return calls


async def burst(check: Callable[[], Awaitable[Any]], n: int = BURST) -> list[Any]:
    return await asyncio.gather(*(check() for _ in range(n)), return_exceptions=True)


def test_a_burst_of_one_api_key_is_checked_once_and_never_throttled(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            creds = credentials(svc, proven_seconds=60.0)
            token = await create_api_key(store, ADMIN)
            asked = count_calls(monkeypatch, store, "api_key")
            got = await burst(lambda: creds.api_key_identity(token, client=CLIENT))
            assert got == [ADMIN] * BURST
            assert len(asked) == 1
            # proven: the next ones are not looked up either, and took no try
            assert await creds.api_key_identity(token, client=CLIENT) == ADMIN
            assert len(asked) == 1 and creds.guard.failed_total == 0
            # proofs are per client: a caller naming none is looked up once for itself
            assert await creds.api_key_identity(token) == ADMIN and len(asked) == 2
            assert await creds.api_key_identity(token) == ADMIN and len(asked) == 2
        finally:
            await store.close()

    asyncio.run(go())


def test_different_wrong_keys_are_each_checked_and_throttled(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            creds = credentials(svc, proven_seconds=60.0)
            token = await create_api_key(store, ADMIN)
            asked = count_calls(monkeypatch, store, "api_key")
            guesses = iter(f"idn_guess{i}" for i in range(BURST))
            got = await burst(lambda: creds.api_key_identity(next(guesses), client=CLIENT))
            throttled = [g for g in got if isinstance(g, Throttled)]
            # the 10 tries the guard gives, each a lookup and a failure; the rest refused
            assert got.count(None) == 10 and len(throttled) == BURST - 10
            assert len(asked) == 10 and creds.guard.failed_total == 10
            # the same wrong key again is checked again (failures are not kept)... and
            # refused unchecked now: the client has no try left
            with pytest.raises(Throttled):
                await creds.api_key_identity("idn_guess0", client=CLIENT)
            # a burst of the right key from the throttled client shares its Throttled
            got = await burst(lambda: creds.api_key_identity(token, client=CLIENT), 20)
            assert all(isinstance(g, Throttled) for g in got) and len(asked) == 10
            # another client is not refused for this one's throttling
            got = await burst(lambda: creds.api_key_identity(token, client="192.0.2.7"), 20)
            assert got == [ADMIN] * 20 and len(asked) == 11
        finally:
            await store.close()

    asyncio.run(go())


def test_a_revoked_api_key_is_trusted_only_for_proven_seconds(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            token = await create_api_key(store, ADMIN)
            sha = hashlib.sha256(token.encode()).hexdigest()
            # trusted for PROVEN_SECONDS: revoked in the store, still accepted from the
            # proof (a long window, so this holds however slow the machine)...
            creds = credentials(svc, proven_seconds=600.0)
            assert await creds.api_key_identity(token, client=CLIENT) == ADMIN
            token2 = await create_api_key(store, ADMIN)
            assert await creds.api_key_identity(token2, client=CLIENT) == ADMIN
            assert await store.delete_api_key(sha)
            assert await creds.api_key_identity(token, client=CLIENT) == ADMIN
            # ...unless revoked on this worker, which forgets the proof at once
            creds.forget_api_key(sha)
            assert await creds.api_key_identity(token, client=CLIENT) is None
            assert creds.guard.failed_total == 1
            # and past PROVEN_SECONDS it is looked up again, and refused
            short = credentials(svc, proven_seconds=0.2)
            assert await short.api_key_identity(token2, client=CLIENT) == ADMIN
            asked = count_calls(monkeypatch, store, "api_key")
            assert await store.delete_api_key(hashlib.sha256(token2.encode()).hexdigest())
            await asyncio.sleep(0.3)
            assert await short.api_key_identity(token2, client=CLIENT) is None
            assert len(asked) == 1 and short.guard.failed_total == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_passwords_a_burst_checked_once_a_wrong_one_refused_a_changed_one_expires(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            creds = credentials(svc, proven_seconds=0.3)
            asked = count_calls(monkeypatch, store, "get_many")
            got = await burst(lambda: creds.check_password(ADMIN, SECRET, client=CLIENT))
            assert got == [True] * BURST and len(asked) == 1
            # the right password is proven: a wrong one for the same identity is not
            # accepted from that proof, but checked, refused and counted as a failure
            assert not await creds.check_password(ADMIN, b"wrong", client=CLIENT)
            assert len(asked) == 2 and creds.guard.failed_total == 1
            # nor does the proof of one identity prove another with the same secret
            other = Identity("0.NA/88.166", 301)
            assert not await creds.check_password(other, SECRET, client=CLIENT)
            assert creds.guard.failed_total == 2
            # a burst of different wrong passwords is throttled as before (8 tries left)
            wrongs = iter(b"wrong%d" % i for i in range(20))
            got = await burst(
                lambda: creds.check_password(ADMIN, next(wrongs), client="192.0.2.9"), 20
            )
            assert got.count(False) == 10 and sum(isinstance(g, Throttled) for g in got) == 10
            # the HS_SECKEY changed: the old secret stops working once its proof is old
            new = HandleValue(300, "HS_SECKEY", b"a new secret", permissions=0x0C)
            changed = await svc.modify_values("0.NA/88.166", (new,), ADMIN)
            assert changed.code == ResponseCode.SUCCESS, changed
            await asyncio.sleep(0.4)
            assert not await creds.check_password(ADMIN, SECRET, client=CLIENT)
            assert await creds.check_password(ADMIN, b"a new secret", client=CLIENT)
        finally:
            await store.close()

    asyncio.run(go())


def test_a_throttled_client_learns_nothing_from_another_client_s_proof(
    store_url: str, tmp_path: Path
) -> None:
    """A service logs in with its password all the time, so the password is proven; a
    guesser the login guard has throttled sends the right password at last: refused
    unchecked (Throttled), as it would be had nobody proven it, not accepted from the
    other client's proof."""

    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            creds = credentials(svc, proven_seconds=600.0)
            assert await creds.check_password(ADMIN, SECRET, client="192.0.2.10")
            for i in range(10):
                assert not await creds.check_password(ADMIN, b"guess%d" % i, client=CLIENT)
            with pytest.raises(Throttled):
                await creds.check_password(ADMIN, SECRET, client=CLIENT)
            assert await creds.check_password(ADMIN, SECRET, client="192.0.2.10")
        finally:
            await store.close()

    asyncio.run(go())
