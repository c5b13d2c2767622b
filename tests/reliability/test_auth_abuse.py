"""Hostile clients against authentication (issue 12), with real `idnode serve` processes:
password guessing is throttled and audited on every door, and unauthenticated clients
cannot grow the registry with challenge state.

Each guessing client speaks from its own loopback address (127.0.0.2, ...), as a
different host would: the throttle is per client address and per identity. The tests
count answers and rows; none asserts a time. The one wait (the backoff test) is a
second, with --auth-retry-interval made that short.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.fernet import Fernet

from idnode.loadtest.auth_abuse_bench import pg_size
from idnode.loadtest.processes import wait_until
from idnode.registry.auth import Identity
from idnode.registry.sealing import Sealer
from idnode.registry.sessions import SessionLimit, SessionStore
from idnode.registry.store import open_store
from idnode.resolver.client import AdminClient, exchange, resolution_request
from idnode.resolver.codec import (
    Challenge,
    ChallengeAnswer,
    CreateHandleRequest,
    FrameBuffer,
    HandleValue,
    LoginRequest,
    Message,
    OpCode,
    ResponseCode,
    decode,
    encode,
)
from idnode.resolver.codec.auth import (
    AUTH_SECKEY,
    MAC_HMAC_SHA256,
    SecretKeyMac,
    encode_secret_key_mac,
)
from idnode.resolver.codec.bodies import VerifyAuthRequest
from idnode.resolver.codec.digest import RequestDigest
from idnode.resolver.grpc_protos import load
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e
RC = ResponseCode
SECRET = b"abuse secret"
ADMIN = ("0.NA/88.166", 300)
FAILURES = 5  # --auth-failures of the guarded node
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


def wrong_mac() -> bytes:
    return encode_secret_key_mac(SecretKeyMac(MAC_HMAC_SHA256, os.urandom(32)))


def create(h: str, data: bytes = b"https://example.cn/a", rid: int = 1) -> Message:
    return Message(
        op_code=OpCode.CREATE_HANDLE,
        request_id=rid,
        body=CreateHandleRequest(h, (HandleValue(1, "URL", data),)),
    )


def basic(secret: str, who: str = "300%3A0.NA/88.166") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{who}:{secret}".encode()).decode()}


def audit_rows(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(
            c.execute("SELECT count(*) FROM audit_log WHERE op = 'AUTHENTICATE'").fetchone()[0]
        )


# --- nodes ---------------------------------------------------------------------------------


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[NodeProcess]:
    """A node whose throttle bites after FAILURES failures per address and never refills
    during a test; an identity takes 4x that from all addresses together."""
    db, key, _ = init_registry(tmp_path, "guarded", "--admin-secret", SECRET.decode())
    n = NodeProcess(
        db,
        log=tmp_path / "guarded.log",
        extra=(
            "--secret-key-file",
            key,
            "--auth-failures",
            str(FAILURES),
            "--auth-identity-failures",
            str(4 * FAILURES),
            "--auth-retry-interval",
            "600",
        ),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def test_handle_guesses_are_throttled_and_audited(guarded: NodeProcess, tmp_path: Path) -> None:
    # VERIFY_RESPONSE: a verdict for FAILURES guesses, then the rate code without one.
    guesser = HandleTcp(guarded, "127.0.0.2")
    codes: Counter[int] = Counter()
    for i in range(FAILURES + 20):
        body = VerifyAuthRequest(
            *ADMIN, os.urandom(16), RequestDigest(2, os.urandom(20)), wrong_mac()
        )
        r = guesser.ask(Message(op_code=OpCode.VERIFY_RESPONSE, request_id=i + 1, body=body))
        codes[r.response_code] += 1
        if r.response_code == RC.REQUEST_LIMIT_DAILY:
            assert "too many failed authentications" in str(r.body)
    guesser.close()
    assert codes == {RC.SUCCESS: FAILURES, RC.REQUEST_LIMIT_DAILY: 20}, codes

    # Challenge answers with a wrong key, from another address: 403 FAILURES times, then
    # the answer is refused unchecked.
    answers: Counter[int] = Counter()
    c = HandleTcp(guarded, "127.0.0.3")
    for i in range(FAILURES + 5):
        challenge = c.ask(create(f"88.166/guess-{i}", rid=2 * i + 1))
        assert challenge.response_code == RC.AUTHENTICATION_NEEDED
        assert isinstance(challenge.body, Challenge)
        answer = Message(
            op_code=OpCode.CHALLENGE_RESPONSE,
            request_id=2 * i + 2,
            session_id=challenge.session_id,
            body=ChallengeAnswer(AUTH_SECKEY, *ADMIN, wrong_mac()),
        )
        answers[c.ask(answer).response_code] += 1
    c.close()
    assert answers == {RC.AUTHENTICATION_FAILED: FAILURES, RC.REQUEST_LIMIT_DAILY: 5}, answers

    # IDIS LOGIN (2000) with wrong passwords, from a third address.
    logins: Counter[int] = Counter()
    c = HandleTcp(guarded, "127.0.0.4")
    for i in range(FAILURES + 5):
        m = Message(
            op_code=OpCode.LOGIN,
            request_id=i + 1,
            body=LoginRequest("300:0.NA/88.166", f"guess{i}"),
        )
        logins[c.ask(m).response_code] += 1
    c.close()
    assert logins == {RC.AUTHENTICATION_FAILED: FAILURES, RC.REQUEST_LIMIT_DAILY: 5}, logins

    # 3 x FAILURES failed authentications of one identity: audited, in a bounded number of
    # rows (the first at once, the rest summed up when the minute ends).
    rows = audit_rows(tmp_path / "guarded.db")
    assert 1 <= rows <= 2, rows

    # The administrator, from an address that did not guess, still authenticates and writes.
    with AdminClient(guarded.server, *ADMIN, secret=SECRET) as admin:
        (r,) = admin.request(create("88.166/still-mine"))
    assert r.response_code == RC.SUCCESS
    assert exchange(guarded.server, resolution_request("88.166/still-mine")).response_code == (
        RC.SUCCESS
    )


def test_http_and_grpc_guesses_are_throttled(guarded: NodeProcess, tmp_path: Path) -> None:
    # REST Basic with wrong secrets: 401 FAILURES times, then 429 with Retry-After.
    statuses = Counter(
        http_call(guarded, "127.0.0.5", "GET", "/api/handles/88.166/x", basic(f"g{i}"))[0]
        for i in range(FAILURES + 5)
    )
    assert statuses == {401: FAILURES, 429: 5}, statuses
    status, j, headers = http_call(guarded, "127.0.0.5", "GET", "/api/handles/88.166/x", basic("g"))
    assert status == 429 and int(headers["Retry-After"]) > 0
    assert j["responseCode"] == RC.REQUEST_LIMIT_DAILY and "too many" in j["message"]

    # REST session answers (/api/sessions) that do not verify.
    refused: Counter[int] = Counter()
    for _ in range(FAILURES + 3):
        status, j, _ = http_call(guarded, "127.0.0.6", "POST", "/api/sessions")
        assert status == 201, j
        header = (
            f'Handle sessionId="{j["sessionId"]}", id="300%3A0.NA%2F88.166", type="HS_SECKEY",'
            f' cnonce="{base64.b64encode(os.urandom(16)).decode()}", alg="SHA256",'
            f' signature="{base64.b64encode(os.urandom(32)).decode()}"'
        )
        refused[
            http_call(guarded, "127.0.0.6", "PUT", "/api/sessions/this", {"Authorization": header})[
                0
            ]
        ] += 1
    assert refused == {401: FAILURES, 429: 3}, refused

    # IDIS /identity/token: "not logged in" FAILURES times, then 429 (status -1 kept).
    tokens = []
    for i in range(FAILURES + 3):
        body = json.dumps({"username": "300:0.NA/88.166", "password": f"g{i}"}).encode()
        status, j, _ = http_call(
            guarded,
            "127.0.0.7",
            "POST",
            "/identity/token",
            {"Content-Type": "application/json"},
            body,
        )
        tokens.append((status, j["status"]))
    assert tokens == [(200, -1)] * FAILURES + [(429, -1)] * 3, tokens

    # The right secret from an address that did not guess still writes.
    put = json.dumps({"values": [{"index": 1, "type": "URL", "data": "https://example.cn/r"}]})
    status, j, _ = http_call(
        guarded,
        "127.0.0.1",
        "PUT",
        "/api/handles/88.166/rest-ok",
        {**basic(SECRET.decode()), "Content-Type": "application/json"},
        put.encode(),
    )
    assert status in (200, 201), j

    # gRPC with unknown API keys: UNAUTHENTICATED FAILURES times, then RESOURCE_EXHAUSTED.
    pb2, pb2_grpc = load()
    channel = grpc.insecure_channel(f"127.0.0.1:{guarded.grpc_port}")
    try:
        stub = pb2_grpc.RegistryStub(channel)
        got: Counter[grpc.StatusCode] = Counter()
        for i in range(FAILURES + 3):
            try:
                stub.DeleteHandle(
                    pb2.DeleteHandleRequest(handle="88.166/x"),
                    metadata=(("authorization", f"Bearer not-a-key-{i}"),),
                    timeout=10,
                )
            except grpc.RpcError as err:
                got[err.code()] += 1
        assert got == {
            grpc.StatusCode.UNAUTHENTICATED: FAILURES,
            grpc.StatusCode.RESOURCE_EXHAUSTED: 3,
        }, got
    finally:
        channel.close()
    # Five doors' failures: each identity (or address, for API keys) audited in its own
    # rows, a bounded number of them.
    rows = audit_rows(tmp_path / "guarded.db")
    assert 2 <= rows <= 4, rows


def test_a_throttled_client_gets_back_in_after_the_backoff(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "brief", "--admin-secret", SECRET.decode())
    n = NodeProcess(
        db,
        log=tmp_path / "brief.log",
        extra=("--secret-key-file", key, "--auth-failures", "3", "--auth-retry-interval", "1"),
    )
    n.wait_ready()
    try:
        path = "/api/handles/88.166/x"
        statuses = [http_call(n, "127.0.0.8", "GET", path, basic(f"g{i}"))[0] for i in range(5)]
        assert statuses == [401, 401, 401, 429, 429], statuses
        # even the right secret waits for the backoff: the throttle does not check it
        assert http_call(n, "127.0.0.8", "GET", path, basic(SECRET.decode()))[0] == 429
        time.sleep(1.2)
        assert http_call(n, "127.0.0.8", "GET", path, basic(SECRET.decode()))[0] == 404
    finally:
        assert n.stop() == 0, n.log_text()


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
    db, key, _ = init_registry(
        tmp_path, "pgflood", "--admin-secret", SECRET.decode(), database_url=pg_url
    )
    n = NodeProcess(db, log=tmp_path / "pgflood.log", extra=("--secret-key-file", key))
    n.wait_ready()
    try:
        _, before = asyncio.run(pg_size(pg_url))
        codes = flood(n)
        assert codes[RC.SERVER_TOO_BUSY] > 0, codes
        rows, after = asyncio.run(pg_size(pg_url))
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


def test_the_running_node_reaps_unanswered_challenges_on_its_timer(tmp_path: Path) -> None:
    """End to end: challenges nobody answers leave the registry on the node's own timer
    (every min(30 s, challenge TTL)), with no request from anyone to trigger it."""
    db, key, _ = init_registry(tmp_path, "reap", "--admin-secret", SECRET.decode())
    n = NodeProcess(
        db, log=tmp_path / "reap.log", extra=("--secret-key-file", key, "--challenge-ttl", "2")
    )
    n.wait_ready()

    def held() -> int:
        with sqlite3.connect(tmp_path / "reap.db") as c:
            return int(
                c.execute("SELECT count(*) FROM sessions WHERE request IS NOT NULL").fetchone()[0]
            )

    try:
        for k in range(5):
            c = HandleTcp(n, f"127.0.2.{k + 1}")
            assert (
                c.ask(create(f"88.166/reap-{k}", rid=k + 1)).response_code
                == RC.AUTHENTICATION_NEEDED
            )
            c.close()
        assert held() == 5
        wait_until(
            lambda: held() == 0,
            "the reaper to remove the unanswered challenges",
            timeout=30,
            proc=n.proc,
        )
        admin_writes(n, "88.166/after-the-reaper")
    finally:
        assert n.stop() == 0, n.log_text()
