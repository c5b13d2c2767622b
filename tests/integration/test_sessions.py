"""Sessions in the registry: shared by workers, single-use nonces, expiry (both backends)."""

from __future__ import annotations

import asyncio

from registry.auth import Identity
from registry.sessions import SessionStore
from registry.store import open_store


def test_sessions(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            worker_a = SessionStore(store, challenge_ttl=60, session_ttl=600)
            worker_b = SessionStore(store, challenge_ttl=60, session_ttl=600)  # another worker
            sid, nonce = await worker_a.challenge(b"request-1", b"digest-1")
            assert sid > 0 and len(nonce) == 16
            pending = await worker_b.take(sid)  # the answer reached the other worker
            assert pending is not None
            assert (pending.request, pending.nonce, pending.digest) == (
                b"request-1",
                nonce,
                b"digest-1",
            )
            assert await worker_a.take(sid) is None  # a nonce answers once
            who = Identity("0.NA/88.166", 300)
            await worker_b.authenticate(sid, who)
            assert await worker_a.identity(sid) == who
            # a new challenge on the same session keeps it; the old nonce is gone
            sid2, nonce2 = await worker_a.challenge(b"request-2", b"digest-2", sid)
            assert sid2 == sid and nonce2 != nonce
            assert (await worker_b.take(sid)).nonce == nonce2  # type: ignore[union-attr]
            assert await worker_a.identity(987654) is None
            # expiry
            short = SessionStore(store, challenge_ttl=-1, session_ttl=-1, cache_seconds=0)
            sid3, _ = await short.challenge(b"r", b"d")
            assert await short.take(sid3) is None  # the challenge expired
            await short.authenticate(sid3, who)
            assert await short.identity(sid3) is None  # the session expired
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_takes_get_the_nonce_once(pg_url: str) -> None:
    async def go() -> None:
        store = open_store(pg_url)
        await store.open()
        try:
            s = SessionStore(store)
            for _ in range(20):
                sid, _ = await s.challenge(b"r", b"d")
                got = await asyncio.gather(*(s.take(sid) for _ in range(4)))
                assert sum(g is not None for g in got) == 1
        finally:
            await store.close()

    asyncio.run(go())
