"""Challenges and keyed sessions in the registry (both backends): shared by workers,
single-use nonces, MACs spent once, expiry, per-client caps, reaping."""

from __future__ import annotations

import asyncio
import time

import pytest
from cryptography.fernet import Fernet

from idnode.registry.auth import Identity
from idnode.registry.sealing import Sealer
from idnode.registry.sessions import SessionLimit, SessionStore
from idnode.registry.store import open_store

WHO = Identity("0.NA/88.166", 300)


def test_challenges(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            worker_a = SessionStore(store, challenge_ttl=60, session_ttl=600)
            worker_b = SessionStore(store, challenge_ttl=60, session_ttl=600)  # another worker
            sid, nonce = await worker_a.challenge(b"request-1", b"digest-1")
            assert sid > 0 and len(nonce) == 16
            assert await worker_b.lookup(sid) == (None, True)  # pending, no keyed session
            pending = await worker_b.take(sid)  # the answer reached the other worker
            assert pending is not None
            assert (pending.request, pending.nonce, pending.digest) == (
                b"request-1",
                nonce,
                b"digest-1",
            )
            assert await worker_a.take(sid) is None  # a nonce answers once
            assert await worker_a.lookup(sid) == (None, False)
            # a bare challenge leaves no session behind: its id authorises nothing later
            assert await worker_a.get(sid) is None
            short = SessionStore(store, challenge_ttl=-1, session_ttl=-1)
            sid3, _ = await short.challenge(b"r", b"d")
            assert await short.take(sid3) is None  # the challenge expired
            # with the node key, the waiting request is stored sealed (it may carry secrets)
            sealed = SessionStore(store, Sealer(Fernet.generate_key()))
            sid4, _ = await sealed.challenge(b"HS_SECKEY=hunter2", b"d")
            row = await store.session_take(sid4, time.time())
            assert row is not None and b"hunter2" not in row[2]
            sid5, _ = await sealed.challenge(b"HS_SECKEY=hunter2", b"d")
            again = await sealed.take(sid5)
            assert again is not None and again.request == b"HS_SECKEY=hunter2"
        finally:
            await store.close()

    asyncio.run(go())


def test_keyed_sessions(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        sealer = Sealer(Fernet.generate_key())
        try:
            a = SessionStore(store, sealer, challenge_ttl=60, session_ttl=600)
            b = SessionStore(store, sealer, challenge_ttl=60, session_ttl=600)  # another worker
            s = await a.open(
                mode=4, cipher=3, key=b"k" * 32, claimed=WHO, major=2, minor=5, timeout=60
            )
            got = await b.get(s.id)
            assert got is not None and got.key == b"k" * 32 and got.claimed == WHO
            assert got.identity is None and got.idle_timeout == 60
            # the key is stored sealed: the registry never holds it in the clear
            row = await store.session_get(s.id, time.time())
            assert row is not None and row.key_sealed is not None
            assert b"k" * 32 not in row.key_sealed
            # a challenge inside the session keeps the session's id
            sid, _ = await a.challenge(b"req", b"dig", s.id)
            assert sid == s.id and (await b.take(sid)) is not None
            assert await b.get(s.id) is not None  # taking the challenge kept the session
            before = await store.session_get(s.id, time.time())
            await b.authenticate(s, WHO)
            authed = await a.get(s.id)
            assert authed is not None and authed.identity == WHO
            # proved: from a challenge's life to the session's idle timeout (60 s here)
            after = await store.session_get(s.id, time.time())
            assert before is not None and after is not None
            assert after.expires >= time.time() + 55 >= before.expires - 5
            # a MAC is spent once, whichever worker sees it; an expired request is refused
            future = int(time.time()) + 3600
            assert (await a.use(authed, b"mac-1", future)).ok
            assert not (await b.use(authed, b"mac-1", future)).ok
            assert (await b.use(authed, b"mac-2", future)).ok
            assert not (await a.use(authed, b"mac-3", int(time.time()) - 5)).ok
            # the server's own counter for its MACs: 1, 2, 3 across workers
            assert [await x.next_counter(authed) for x in (a, b, a)] == [1, 2, 3]
            # terminate: gone for every worker, and its MACs no longer count
            assert await b.close(s.id)
            assert await a.get(s.id) is None
            assert (await a.use(authed, b"mac-4", future)).gone
            # the client's timeout is capped by session_ttl
            assert a.idle_timeout(10**9) == 600 and a.idle_timeout(0) == 600
            # a CIPHER_SERVER session gets its key once: a second SESSION_EXCHANGEKEY
            # cannot replace it
            waiting = await a.open(
                mode=3, cipher=0, key=None, claimed=None, major=2, minor=5, timeout=60
            )
            assert (await b.get(waiting.id)) is not None
            assert await b.set_key(waiting.id, 3, b"1" * 32)
            assert not await a.set_key(waiting.id, 3, b"2" * 32)
            keyed = await a.get(waiting.id)
            assert keyed is not None and keyed.key == b"1" * 32
        finally:
            await store.close()

    asyncio.run(go())


def test_limits_expiry_and_reaping(store_url: str) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        sealer = Sealer(Fernet.generate_key())
        try:
            capped = SessionStore(store, sealer, per_client=3)
            for _ in range(3):
                await capped.challenge(b"r", b"d", client="198.51.100.7")
            with pytest.raises(SessionLimit):
                await capped.challenge(b"r", b"d", client="198.51.100.7")
            with pytest.raises(SessionLimit):
                await capped.open(
                    mode=4,
                    cipher=3,
                    key=b"k" * 32,
                    claimed=None,
                    major=2,
                    minor=5,
                    timeout=60,
                    client="198.51.100.7",
                )
            await capped.challenge(b"r", b"d", client="198.51.100.8")  # others are not held up
            # all clients together are capped too (forged UDP addresses are many)
            full = SessionStore(store, sealer, total=1)
            full.headroom.period = 0  # count afresh every time (a node counts once a second)
            with pytest.raises(SessionLimit, match="node holds"):
                await full.challenge(b"r", b"d", client="198.51.100.9")
            # an unauthenticated session lives only as long as a challenge would
            brief = SessionStore(store, sealer, challenge_ttl=-1)
            s = await brief.open(
                mode=4, cipher=3, key=b"k" * 32, claimed=WHO, major=2, minor=5, timeout=600
            )
            assert await brief.get(s.id) is None
            assert await brief.reap() >= 1
            assert await store.session_get(s.id, 0) is None  # the row is gone, not just stale
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


def test_concurrent_uses_spend_a_mac_once(pg_url: str) -> None:
    async def go() -> None:
        store = open_store(pg_url)
        await store.open()
        sealer = Sealer(Fernet.generate_key())
        try:
            st = SessionStore(store, sealer)
            s = await st.open(
                mode=4, cipher=3, key=b"k" * 32, claimed=WHO, major=2, minor=5, timeout=60
            )
            future = int(time.time()) + 600
            for i in range(20):
                got = await asyncio.gather(*(st.use(s, b"m%d" % i, future) for _ in range(4)))
                assert sum(g.ok for g in got) == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_a_new_mac_renews_the_session_and_a_replay_does_not(store_url: str) -> None:
    """session_use in one step: a new MAC is recorded and the session's life renewed;
    the same MAC again is refused and renews nothing; a session gone is said to be."""

    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        sealer = Sealer(Fernet.generate_key())
        try:
            s = await SessionStore(store, sealer).open(
                mode=4, cipher=3, key=b"k" * 32, claimed=WHO, major=2, minor=5, timeout=60
            )
            now = time.time()
            mac_life = now + 600
            first = await store.session_use(s.id, b"mac", mac_life, now, now + 5000)
            assert first.ok and not first.gone
            row = await store.session_get(s.id, time.time())
            assert row is not None and abs(row.expires - (now + 5000)) < 1
            again = await store.session_use(s.id, b"mac", mac_life, now, now + 9000)
            assert not again.ok and not again.gone
            row = await store.session_get(s.id, time.time())
            assert row is not None and abs(row.expires - (now + 5000)) < 1
            # expired by the clock the caller gives: gone, nothing recorded
            late = await store.session_use(s.id, b"other", mac_life, now + 6000, now + 9000)
            assert late.gone and not late.ok
        finally:
            await store.close()

    asyncio.run(go())


def test_a_session_key_is_unsealed_once_and_its_row_still_decides(store_url: str) -> None:
    """The unsealed key is kept by its sealed form, so a session's requests unseal it
    once; but the row decides: a closed session is gone although its key is kept."""
    unsealed: list[bytes] = []

    class Counting(Sealer):
        def unseal(self, stored: bytes) -> bytes:
            unsealed.append(stored)
            return super().unseal(stored)

    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            st = SessionStore(store, Counting(Fernet.generate_key()))
            s = await st.open(
                mode=4, cipher=3, key=b"k" * 32, claimed=WHO, major=2, minor=5, timeout=60
            )
            for _ in range(3):
                got, _pending = await st.lookup(s.id)
                assert got is not None and got.key == b"k" * 32
            assert len(unsealed) == 1
            assert await st.close(s.id)
            assert (await st.lookup(s.id))[0] is None
        finally:
            await store.close()

    asyncio.run(go())
