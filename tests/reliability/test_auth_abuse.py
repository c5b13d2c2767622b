"""Hostile clients against authentication (issue 12), with real `idnode serve` processes:
unauthenticated clients cannot grow the registry with challenge state.

Each flooding client speaks from its own loopback address (127.0.1.x), as a different
host would. The tests count answers, rows and bytes; none asserts a time.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import socket
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.fernet import Fernet

from idnode.registry.auth import Identity
from idnode.registry.sealing import Sealer
from idnode.registry.sessions import SessionLimit, SessionStore
from idnode.registry.store import open_store
from idnode.resolver.client import AdminClient, exchange, resolution_request
from idnode.resolver.codec import (
    CreateHandleRequest,
    FrameBuffer,
    HandleValue,
    Message,
    OpCode,
    ResponseCode,
    decode,
    encode,
)
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e
RC = ResponseCode
SECRET = b"abuse secret"
ADMIN = ("0.NA/88.166", 300)
MIB = 1 << 20


# --- clients from a chosen loopback address ------------------------------------------------


def tcp_messages(sock: socket.socket, frames: FrameBuffer) -> Message:
    while True:
        data = sock.recv(65536)
        assert data, "the node closed the connection"
        got = frames.feed(data)
        if got:
            return decode(got[0])


class HandleTcp:
    """One Handle TCP connection from ``source``: request in, first answer out."""

    def __init__(self, node: NodeProcess, source: str) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", node.handle_port), 10, source_address=(source, 0)
        )
        self.frames = FrameBuffer()

    def ask(self, m: Message) -> Message:
        self.sock.sendall(encode(m))
        return tcp_messages(self.sock, self.frames)

    def close(self) -> None:
        self.sock.close()


def http_call(
    node: NodeProcess,
    source: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any, dict[str, str]]:
    c = http.client.HTTPConnection("127.0.0.1", node.http_port, 10, source_address=(source, 0))
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        raw = r.read()
        ctype = r.getheader("Content-Type") or ""
        parsed = json.loads(raw) if raw and "json" in ctype else raw
        return r.status, parsed, dict(r.getheaders())
    finally:
        c.close()


def create(h: str, data: bytes = b"https://example.cn/a", rid: int = 1) -> Message:
    return Message(
        op_code=OpCode.CREATE_HANDLE,
        request_id=rid,
        body=CreateHandleRequest(h, (HandleValue(1, "URL", data),)),
    )


# --- challenge floods ----------------------------------------------------------------------

LARGE = os.urandom(125_000).hex().encode()  # a 250 KB value: the request nearly 256 KiB
FLOOD_SENDERS, FLOOD_EACH = 20, 12  # 240 requests, ~80 MB sealed if all were kept
BOUND = 40 * MIB  # the default caps: 32 MiB of requests, plus the rows around them


def flood(node: NodeProcess) -> Counter[int]:
    """Unauthenticated CREATE_HANDLEs with a large value: most senders over Handle TCP,
    the last four through the HTTP tunnel; each from its own loopback address."""
    codes: Counter[int] = Counter()
    for k in range(FLOOD_EACH):
        for j in range(FLOOD_SENDERS):
            source = f"127.0.1.{j + 1}"
            m = create(f"88.166/flood-{j}-{k}", LARGE, rid=k + 1)
            if j < FLOOD_SENDERS - 4:
                c = HandleTcp(node, source)
                codes[c.ask(m).response_code] += 1
                c.close()
            else:
                status, raw, _ = http_call(
                    node,
                    source,
                    "POST",
                    "/",
                    {"Content-Type": "application/x-hdl-message"},
                    encode(m),
                )
                assert status == 200, raw
                codes[decode(raw).response_code] += 1
    return codes


def admin_writes(node: NodeProcess, h: str) -> None:
    with AdminClient(node.server, *ADMIN, secret=SECRET) as admin:
        (r,) = admin.request(create(h))
    assert r.response_code == RC.SUCCESS
    assert exchange(node.server, resolution_request(h)).response_code == RC.SUCCESS


def test_a_challenge_flood_does_not_grow_the_sqlite_registry(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "flood", "--admin-secret", SECRET.decode())
    n = NodeProcess(db, log=tmp_path / "flood.log", extra=("--secret-key-file", key))
    n.wait_ready()

    def files() -> int:  # the database and its WAL
        return sum(p.stat().st_size for p in tmp_path.glob("flood.db*"))

    try:
        before = files()
        codes = flood(n)
        assert codes[RC.AUTHENTICATION_NEEDED] > 0 and codes[RC.SERVER_TOO_BUSY] > 0, codes
        with sqlite3.connect(tmp_path / "flood.db") as c:
            rows, kept = c.execute(
                "SELECT count(*), coalesce(sum(length(request)), 0) FROM sessions"
            ).fetchone()
        assert kept <= 32 * MIB and rows <= codes[RC.AUTHENTICATION_NEEDED], (rows, kept)
        assert files() - before < BOUND, files() - before
        admin_writes(n, "88.166/after-the-flood")
    finally:
        assert n.stop() == 0, n.log_text()


def test_a_challenge_flood_does_not_grow_the_postgres_registry(tmp_path: Path, pg_url: str) -> None:
    async def sessions_size() -> tuple[int, int]:
        c = await asyncpg.connect(pg_url)
        try:
            rows = await c.fetchval("SELECT count(*) FROM sessions")
            size = await c.fetchval("SELECT pg_total_relation_size('sessions')")
            return int(rows), int(size)
        finally:
            await c.close()

    db, key, _ = init_registry(
        tmp_path, "pgflood", "--admin-secret", SECRET.decode(), database_url=pg_url
    )
    n = NodeProcess(db, log=tmp_path / "pgflood.log", extra=("--secret-key-file", key))
    n.wait_ready()
    try:
        _, before = asyncio.run(sessions_size())
        codes = flood(n)
        assert codes[RC.SERVER_TOO_BUSY] > 0, codes
        rows, after = asyncio.run(sessions_size())
        assert rows <= codes[RC.AUTHENTICATION_NEEDED] and after - before < BOUND, (rows, after)
        admin_writes(n, "88.166/after-the-pg-flood")
    finally:
        assert n.stop() == 0, n.log_text()


def test_challenge_bytes_are_capped_and_reaped(store_url: str) -> None:
    """What the node's 30 s reaper relies on, on each backend: the byte caps per client and
    in all, and that reaping removes expired challenges and the stale request of a live
    session (a live session could otherwise keep a large request for its whole life)."""

    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        sealer = Sealer(Fernet.generate_key())
        try:
            # 1 MiB a client: three requests of 250 kB (sealed: 333 kB each), not four;
            # 1.5 MiB in all, of which large requests may fill 7/8: four of them.
            s = SessionStore(store, sealer, client_bytes=MIB, total_bytes=MIB + MIB // 2)
            s.budget.period = 0  # sum afresh every time (a node sums once a second)
            big = os.urandom(250_000)
            for _ in range(3):
                await s.challenge(big, b"d", client="198.51.100.1")
            with pytest.raises(SessionLimit, match=r"198\.51\.100\.1"):
                await s.challenge(big, b"d", client="198.51.100.1")
            await s.challenge(big, b"d", client="198.51.100.2")
            with pytest.raises(SessionLimit, match="the node keeps"):
                await s.challenge(big, b"d", client="198.51.100.3")
            await s.challenge(b"small", b"d", client="198.51.100.3")  # small ones still fit
            assert await store.challenge_bytes() <= MIB + MIB // 2
            # A keyed, authenticated session with a challenge that was never answered.
            live = SessionStore(store, sealer, challenge_ttl=-1)
            sess = await live.open(
                mode=4, cipher=3, key=b"k" * 32, claimed=None, major=2, minor=5, timeout=600
            )
            await live.authenticate(sess, Identity("0.NA/88.166", 300))
            await live.challenge(big, b"d", session_id=sess.id)
            expired = SessionStore(store, sealer, challenge_ttl=-1)
            await expired.challenge(big, b"d", client="198.51.100.4")
            held = await store.challenge_bytes()
            assert await live.reap() >= 2
            assert await store.challenge_bytes() <= held - 2 * len(big)
            assert await live.get(sess.id) is not None  # the session itself lives on
        finally:
            await store.close()

    asyncio.run(go())
