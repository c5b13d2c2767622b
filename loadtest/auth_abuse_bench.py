"""Challenge floods and password guessing against a real node, measured (issue 12); not a test.

    python -m idnode.loadtest.auth_abuse_bench flood [--senders 20] [--per-sender 30]
        [--size 250000] [--transport tcp|http] [--pg postgresql://.../scratch_db]
    python -m idnode.loadtest.auth_abuse_bench guess [--seconds 5]

``flood`` sends unauthenticated CREATE_HANDLEs with a large value, one per connection,
each sender from its own loopback address (127.0.x.y), and prints the answers and the
registry's growth: the SQLite files, or on PostgreSQL (an empty scratch database you
made) the sessions table's rows and pg_total_relation_size. ``guess`` sends wrong
VERIFY_RESPONSE answers over one TCP connection, then wrong REST Basic secrets, for
``--seconds`` each from one address, and prints how many got a verdict and the audit rows
written. Both start `idnode serve` with its defaults on loopback and run whatever `idnode`
is importable: point PYTHONPATH at another checkout and run this file by its path to
measure that code.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path

from idnode.loadtest.processes import IDNODE, NodeProcess
from idnode.resolver.codec import (
    CreateHandleRequest,
    FrameBuffer,
    HandleValue,
    Message,
    OpCode,
    decode,
    encode,
)
from idnode.resolver.codec.auth import MAC_HMAC_SHA256, SecretKeyMac, encode_secret_key_mac
from idnode.resolver.codec.bodies import VerifyAuthRequest
from idnode.resolver.codec.digest import RequestDigest


def start(url: str, tmp: Path) -> NodeProcess:
    key = str(tmp / "node.key")
    init = ["init", "--prefix", "88.166", "--admin-secret", "s3cret"]
    subprocess.run(
        [IDNODE, *init, "--database-url", url, "--secret-key-file", key],
        check=True,
        capture_output=True,
        cwd=tmp,
    )
    n = NodeProcess(url, log=tmp / "node.log", extra=("--secret-key-file", key))
    n.wait_ready()
    return n


def first_answer(sock: socket.socket, frames: FrameBuffer) -> Message:
    while True:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the node closed the connection")
        got = frames.feed(data)
        if got:
            return decode(got[0])


def flood(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="auth-flood-"))
    url = args.pg or f"sqlite:///{tmp}/r.db"
    n = start(url, tmp)

    def size() -> tuple[int, int]:
        if args.pg:
            return asyncio.run(pg_size(args.pg))
        with sqlite3.connect(tmp / "r.db") as c:
            rows = int(c.execute("SELECT count(*) FROM sessions").fetchone()[0])
        return rows, sum(p.stat().st_size for p in tmp.glob("r.db*"))

    rows0, size0 = size()
    codes: Counter[int] = Counter()
    value = os.urandom(args.size // 2).hex().encode()
    t0 = time.monotonic()
    i = 0
    for _ in range(args.per_sender):
        for j in range(args.senders):
            source = f"127.0.{2 + j // 250}.{1 + j % 250}"
            i += 1
            wire = encode(
                Message(
                    op_code=OpCode.CREATE_HANDLE,
                    request_id=i,
                    body=CreateHandleRequest(f"88.166/flood{i}", (HandleValue(1, "URL", value),)),
                )
            )
            if args.transport == "tcp":
                with socket.create_connection(
                    ("127.0.0.1", n.handle_port), 10, source_address=(source, 0)
                ) as s:
                    s.sendall(wire)
                    codes[first_answer(s, FrameBuffer()).response_code] += 1
            else:
                c = http.client.HTTPConnection(
                    "127.0.0.1", n.http_port, 10, source_address=(source, 0)
                )
                c.request("POST", "/", wire, {"Content-Type": "application/x-hdl-message"})
                r = c.getresponse()
                body = r.read()
                c.close()
                codes[decode(body).response_code if r.status == 200 else r.status] += 1
    took = time.monotonic() - t0
    rows1, size1 = size()
    print(
        f"{i} requests of {args.size} B in {took:.1f} s over {args.transport} from "
        f"{args.senders} addresses; answers {dict(codes)}"
    )
    what = "sessions table" if args.pg else "registry files"
    print(
        f"sessions rows {rows0} -> {rows1}; {what} {size0 / 1e6:.1f} MB -> "
        f"{size1 / 1e6:.1f} MB (+{(size1 - size0) / 1e6:.1f} MB)"
    )
    n.stop()


async def pg_size(url: str) -> tuple[int, int]:
    import asyncpg

    c = await asyncpg.connect(url)
    try:
        rows = await c.fetchval("SELECT count(*) FROM sessions")
        size = await c.fetchval("SELECT pg_total_relation_size('sessions')")
        return int(rows), int(size)
    finally:
        await c.close()


def guess(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="auth-guess-"))
    n = start(f"sqlite:///{tmp}/r.db", tmp)

    def audit_rows() -> int:
        with sqlite3.connect(tmp / "r.db") as c:
            q = "SELECT count(*) FROM audit_log WHERE op = 'AUTHENTICATE'"
            return int(c.execute(q).fetchone()[0])

    s = socket.create_connection(("127.0.0.1", n.handle_port))
    frames = FrameBuffer()
    verdicts: Counter[str] = Counter()
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < args.seconds:
        i += 1
        mac = encode_secret_key_mac(SecretKeyMac(MAC_HMAC_SHA256, os.urandom(32)))
        body = VerifyAuthRequest(
            "0.NA/88.166", 300, os.urandom(16), RequestDigest(2, os.urandom(20)), mac
        )
        s.sendall(encode(Message(op_code=OpCode.VERIFY_RESPONSE, request_id=i, body=body)))
        rc = first_answer(s, frames).response_code
        verdicts["verdict" if rc == 1 else f"RC {rc}"] += 1
    took = time.monotonic() - t0
    s.close()
    print(
        f"VERIFY_RESPONSE: {i} wrong answers in {took:.1f} s: {dict(verdicts)}; "
        f"{verdicts['verdict'] / took:.0f} verdicts/s; audit rows {audit_rows()}"
    )
    c = http.client.HTTPConnection("127.0.0.1", n.http_port)
    statuses: Counter[int] = Counter()
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < args.seconds:
        i += 1
        token = base64.b64encode(f"300%3A0.NA/88.166:guess{i}".encode()).decode()
        c.request("GET", "/api/handles/88.166/x", headers={"Authorization": f"Basic {token}"})
        r = c.getresponse()
        r.read()
        statuses[r.status] += 1
    took = time.monotonic() - t0
    print(
        f"REST Basic: {i} wrong secrets in {took:.1f} s: {dict(statuses)}; "
        f"{statuses[401] / took:.0f} verdicts (401)/s; audit rows {audit_rows()}"
    )
    n.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("flood")
    f.add_argument("--senders", type=int, default=20)
    f.add_argument("--per-sender", type=int, default=30)
    f.add_argument("--size", type=int, default=250_000, help="bytes of the value")
    f.add_argument("--transport", choices=("tcp", "http"), default="tcp")
    f.add_argument("--pg", default="", help="an empty scratch PostgreSQL database")
    g = sub.add_parser("guess")
    g.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    flood(args) if args.command == "flood" else guess(args)


if __name__ == "__main__":
    main()
