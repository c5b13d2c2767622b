"""REST sessions (/api/sessions) in the registry, on both backends: shared by workers,
one answer per nonce, expiry, DELETE; and the answers the reference accepts."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
from pathlib import Path

import pytest

from idnode.registry.postgres_store import PostgresStore
from idnode.registry.service import RegistryService
from idnode.registry.sessions import SessionLimit
from idnode.registry.sqlite_store import SqliteStore
from idnode.registry.store import Store, open_store
from idnode.resolver.codec.auth import pbkdf2_mac
from idnode.resolver.rest_sessions_door import (
    BAD_HEADER,
    NOT_VERIFIED,
    RestSessions,
    SessionView,
    b64decode_lenient,
    parse_handle_authorization,
)
from tests.integration.sealed_registry import ADMIN, SECRET, registry


def answer(
    session: SessionView, secret: bytes = SECRET, alg: str = "HMAC-SHA256"
) -> dict[str, str]:
    cnonce = os.urandom(16)
    data = session.nonce + cnonce
    if alg == "HMAC-SHA256":
        mac = hmac.new(secret, data, "sha256").digest()
    else:
        mac = hashlib.sha256(secret + data + secret).digest()
    return {
        "sessionid": session.session_id,
        "id": str(ADMIN),
        "type": "HS_SECKEY",
        "alg": alg,
        "cnonce": base64.b64encode(cnonce).decode(),
        "signature": base64.urlsafe_b64encode(mac).decode().rstrip("="),  # either alphabet
    }


def test_sessions_are_shared_answered_once_and_ended(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        other = open_store(store_url)  # another worker: its own connection, same registry
        await other.open()
        try:
            worker_a = RestSessions(svc, ttl=600)
            worker_b = RestSessions(
                RegistryService(other, svc.authority, sealer=svc.sealer), ttl=600
            )
            opened = await worker_a.open()
            assert len(base64.urlsafe_b64decode(opened.session_id + "=")) == 32
            seen = await worker_b.find(opened.session_id)
            assert seen == opened  # the other worker sees it, nonce and all
            fields = answer(opened)
            proved = await worker_b.answer(opened, fields)
            assert proved is not None and proved.identity == ADMIN and not proved.error
            assert proved.nonce != opened.nonce  # the answered nonce is used up
            assert (await worker_a.find(opened.session_id)) == proved
            current = await worker_a.find(opened.session_id)
            assert current is not None
            again = await worker_a.answer(current, fields)  # the same answer again
            assert again is not None and again.error == NOT_VERIFIED
            assert again.identity == ADMIN  # a refused answer leaves the proved identity
            # only a hash of the id is stored
            rows = await store.get_many([opened.session_id])
            assert rows == {}
            assert await worker_b.end(opened.session_id)
            assert await worker_a.find(opened.session_id) is None
            assert not await worker_a.end(opened.session_id)
            assert await worker_a.answer(opened, answer(proved)) is None
        finally:
            await other.close()
            await store.close()

    asyncio.run(go())


def test_answers_the_reference_accepts_and_refuses(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await registry(sqlite_url, tmp_path)
        try:
            sessions = RestSessions(svc, ttl=600)
            s = await sessions.open()
            wrong = await sessions.answer(s, answer(s, secret=b"wrong"))
            assert wrong is not None and wrong.error == NOT_VERIFIED and wrong.identity is None
            keyed = await sessions.answer(wrong, answer(wrong, alg="SHA256"))
            assert keyed is not None and keyed.identity == ADMIN and not keyed.error
            any_key = {**answer(keyed), "id": "0.NA/88.166"}  # no index: any of its keys
            found = await sessions.answer(keyed, any_key)
            assert found is not None and found.identity == ADMIN
            cnonce, salt = os.urandom(16), os.urandom(8)
            mac = pbkdf2_mac(SECRET, found.nonce + cnonce, salt, 1000, 160)
            pbkdf2 = {
                **answer(found),
                "alg": "PBKDF2WithHmacSHA1",
                "cnonce": base64.b64encode(cnonce).decode(),
                "signature": base64.b64encode(mac).decode(),
                "salt": base64.b64encode(salt).decode(),
                "iterations": "1000",
                "length": "160",
            }
            found = await sessions.answer(found, pbkdf2)
            assert found is not None and found.identity == ADMIN and not found.error
            cases: list[tuple[dict[str, str | None], str]] = [
                ({"alg": "ROT13"}, BAD_HEADER),
                ({"signature": "***"}, BAD_HEADER),
                ({"version": "2"}, "Unknown version in Authorization: Handle"),
                ({"cnonce": None}, "Missing fields in authentication data"),
                (
                    {"alg": "PBKDF2-HMAC-SHA1", "salt": "", "iterations": "9" * 12, "length": "1"},
                    BAD_HEADER,
                ),
            ]
            for broken, error in cases:
                merged: dict[str, str | None] = {**answer(found), **broken}
                fields = {k: v for k, v in merged.items() if v is not None}
                got = await sessions.answer(found, fields)
                assert got is not None and got.error == error
        finally:
            await store.close()

    asyncio.run(go())


async def expires_of(store: Store, session: SessionView) -> float | None:
    """The stored expiry of a REST session, read with SQL beside the store."""
    key = hashlib.sha256(session.session_id.encode()).hexdigest()
    sql = "SELECT expires FROM rest_sessions WHERE id_sha256 = "
    if isinstance(store, PostgresStore):
        async with store.pool.acquire() as c:
            return await c.fetchval(sql + "$1", key)  # type: ignore[no-any-return]
    assert isinstance(store, SqliteStore)
    row = store.db.execute(sql + "?", (key,)).fetchone()
    return None if row is None else float(row[0])


def test_anonymous_sessions_live_briefly_and_never_slide(store_url: str, tmp_path: Path) -> None:
    """Anyone may open a session: until it proves an identity it lives only
    ``anonymous_ttl`` from its opening, however often it is used; once proved, it lives
    ``ttl`` idle."""

    async def go() -> None:
        store, svc = await registry(store_url, tmp_path)
        try:
            gone = RestSessions(svc, ttl=600, anonymous_ttl=-1)
            s = await gone.open()
            assert await gone.find(s.session_id) is None
            assert await gone.answer(s, answer(s)) is None
            assert not await gone.end(s.session_id)

            sessions = RestSessions(svc, ttl=600, anonymous_ttl=60)
            s = await sessions.open()
            opened_until = await expires_of(store, s)
            assert opened_until is not None
            found = await sessions.find(s.session_id)
            assert found is not None
            refused = await sessions.answer(found, answer(found, secret=b"wrong"))
            assert refused is not None and refused.error == NOT_VERIFIED
            assert await expires_of(store, s) == opened_until  # used twice, not extended
            proved = await sessions.answer(refused, answer(refused))
            assert proved is not None and proved.identity == ADMIN
            until = await expires_of(store, s)
            assert until is not None and until >= opened_until + 500  # now the full ttl

            idle = RestSessions(svc, ttl=-1, anonymous_ttl=60)
            s = await idle.open()
            assert await idle.find(s.session_id) is not None
            assert (await idle.answer(s, answer(s))) is not None  # proved: lives ttl (-1)
            assert await idle.find(s.session_id) is None
        finally:
            await store.close()

    asyncio.run(go())


def test_anonymous_sessions_are_capped_in_all(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await registry(sqlite_url, tmp_path)
        try:
            sessions = RestSessions(svc, ttl=600, total=3)
            for _ in range(3):
                await sessions.open()
            sessions.kept.headroom.period = 0  # count afresh (a node counts once a second)
            with pytest.raises(SessionLimit):
                await sessions.open()
        finally:
            await store.close()

    asyncio.run(go())


def test_concurrent_answers_to_one_nonce_prove_once(pg_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await registry(pg_url, tmp_path)
        try:
            sessions = RestSessions(svc, ttl=600)
            for _ in range(10):
                s = await sessions.open()
                fields = answer(s)
                got = await asyncio.gather(*(sessions.answer(s, fields) for _ in range(4)))
                assert sum(g is not None and not g.error for g in got) == 1
        finally:
            await store.close()

    asyncio.run(go())


def test_the_authorization_header_as_the_reference_parses_it() -> None:
    header = (
        'Handle  sessionId="abc", id="300%3A0.NA%2F88.166",type=HS_SECKEY ,'
        ' cnonce="a\\"b", alg=SHA256, signature="c2ln"'
    )
    assert parse_handle_authorization(header) == {
        "sessionid": "abc",
        "id": "300:0.NA/88.166",
        "type": "HS_SECKEY",
        "cnonce": 'a"b',
        "alg": "SHA256",
        "signature": "c2ln",
    }
    assert parse_handle_authorization('handle sessionId="x",') == {"sessionid": "x"}
    for bad in ("Basic abc", "Handle", 'Handle a="b" c="d"', "Handle a=", 'Handle a="b'):
        assert parse_handle_authorization(bad) is None, bad
    assert b64decode_lenient("+/+/") == b64decode_lenient("-_-_") == b"\xfb\xff\xbf"
    assert b64decode_lenient(" YWJj\n") == b"abc"
