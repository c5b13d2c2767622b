"""Handle UDP resolution throughput and latency, each figure beside its ceiling.

Server and load run on different cores (``--server-cpu``, ``--load-cpu``). In one run:

1. ceiling: a bare uvloop UDP echo (``loadtest.ceilings``) answering the same packets;
2. ``l1``: `idnode serve` (one worker, embedded registry) with every hot handle in L1;
3. ``redis``: L1 off, every lookup answered from Redis (ceiling: MGET batches of 100);
4. ``postgres``: L1 and Redis off, every lookup a PostgreSQL read (ceiling: asyncpg
   batches of 100 of the store's key query).

The load is closed-loop: ``--window`` requests in flight from one socket. Latency
is from send to answer, in HdrHistogram. Everything goes to 127.0.0.1 and stops
after ``--seconds``.

    python -m idnode.loadtest.udp_bench                       # all modes, 5 s each
    python -m idnode.loadtest.udp_bench --modes l1 --seconds 10 --json results/udp.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from idnode.loadtest.processes import (
    NodeProcess,
    clear_namespace,
    free_port,
    pinned,
    stop,
    wait_udp,
)
from idnode.loadtest.report import emit
from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.migrate import upgrade
from idnode.registry.store import HandleRecord, open_store
from idnode.resolver.codec import HandleValue, encode, encode_values
from idnode.resolver.codec.codes import OpCode, OpFlag
from idnode.resolver.codec.wire import U32

PREFIX = "88.166"


def hot_handles(n: int) -> list[str]:
    return [f"{PREFIX}.{1001 + i % 7}/BENCH-{i:07d}" for i in range(n)]


def records(handles: list[str]) -> list[HandleRecord]:
    return [
        HandleRecord(
            h,
            encode_values(
                [
                    HandleValue(
                        1, "URL", f"https://example.cn/p/{h}".encode(), timestamp=1700000000
                    ),
                    HandleValue(1001, "TEMPLATE", b"88.166/tpl-v1", timestamp=1700000000),
                    HandleValue(
                        2001, "productName", "液压阀 HV-200".encode(), timestamp=1700000000
                    ),
                ]
            ),
        )
        for h in handles
    ]


def packets(handles: list[str]) -> list[bytes]:
    from idnode.resolver.codec import Message, ResolutionRequest

    return [
        encode(
            Message(
                op_code=OpCode.RESOLUTION,
                body=ResolutionRequest(h),
                request_id=i,
                op_flags=OpFlag.REC | OpFlag.CA | OpFlag.PO,
            )
        )
        for i, h in enumerate(handles)
    ]


# --- the load -------------------------------------------------------------------


def udp_load(port: int, pkts: list[bytes], seconds: float, window: int) -> dict[str, Any]:
    """Closed loop: keep ``window`` requests in flight; count answers; record latency (us)."""
    hist = HdrHistogram(1, 60_000_000, 3)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
    s.connect(("127.0.0.1", port))
    s.settimeout(0.2)
    n = len(pkts)
    window = min(window, n // 2)
    outstanding: dict[int, float] = {}
    clock = time.perf_counter
    send, recv, unpack = s.send, s.recv, U32.unpack_from
    nxt = 0

    def fire() -> None:
        nonlocal nxt
        i = nxt % n
        nxt += 1
        outstanding[i] = clock()
        send(pkts[i])

    for _ in range(window):
        fire()
    answered = lost = 0
    codes: dict[int, int] = {}
    start = clock()
    deadline = start + seconds
    while True:
        try:
            data = recv(65535)
        except TimeoutError:
            lost += len(outstanding)
            outstanding.clear()
            for _ in range(window):
                fire()
            if clock() >= deadline:
                break
            continue
        t = outstanding.pop(unpack(data, 8)[0], None)
        now = clock()
        if t is None:
            continue
        hist.record_value(max(1, int((now - t) * 1e6)))
        rc = unpack(data, 24)[0] if len(data) >= 28 else -1
        codes[rc] = codes.get(rc, 0) + 1
        answered += 1
        if now >= deadline:
            break
        fire()
    elapsed = clock() - start
    s.close()
    return {
        "answers_per_s": round(answered / elapsed),
        "answered": answered,
        "lost": lost,
        "response_codes": {str(k): v for k, v in sorted(codes.items())},
        "p50_us": hist.get_value_at_percentile(50),
        "p99_us": hist.get_value_at_percentile(99),
        "p999_us": hist.get_value_at_percentile(99.9),
        "max_us": hist.get_max_value(),
    }


# --- the servers -------------------------------------------------------------------


def start_node(db_url: str, cpu: int, extra: list[str], log: Path, probe: bytes) -> NodeProcess:
    """`idnode serve` pinned to ``cpu``, once it answers ``probe`` over UDP."""
    node = NodeProcess(db_url, extra=("--log-level", "warning", *extra), log=log, cpus=[cpu])
    try:
        wait_udp(node.handle_port, probe, proc=node.proc, log=log)
    except BaseException:
        node.stop()
        raise
    return node


# --- ceilings of the lower tiers (measured from the load core) ---------------------


async def mget_ceiling(redis_url: str, keys: list[str], seconds: float) -> float:
    import redis.asyncio as aioredis

    r = aioredis.from_url(redis_url)  # type: ignore[no-untyped-call]
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for i in range(0, len(keys), 100):
            batch = keys[i : i + 100]
            await r.mget(batch)
            done += len(batch)
    elapsed = time.perf_counter() - start
    await r.aclose()
    return done / elapsed


async def any_ceiling(
    pg_url: str, keys: list[str], seconds: float, cycle: bool = False, connections: int = 4
) -> float:
    """Keys/s of the store's own batched key lookup (batches of 100) run bare through
    asyncpg on ``connections`` connections at once (the store's pool size): what
    PostgreSQL gives when nothing but the query is in the way. ``cycle``: go round the
    keys until the time is up (else once through at most)."""
    import asyncio

    import asyncpg

    from idnode.registry.postgres_store import GET_MANY

    conns = [await asyncpg.connect(pg_url) for _ in range(connections)]
    done = 0
    start = time.perf_counter()

    async def lane(c: Any, mine: list[list[str]]) -> None:
        nonlocal done
        stmt = await c.prepare(GET_MANY)
        while True:
            for batch in mine:
                if time.perf_counter() - start >= seconds:
                    return
                await stmt.fetch(batch)
                done += len(batch)
            if not cycle:
                return

    batches = [keys[i : i + 100] for i in range(0, len(keys), 100)]
    try:
        await asyncio.gather(*(lane(c, batches[k :: len(conns)]) for k, c in enumerate(conns)))
    finally:
        for c in conns:
            await c.close()
    return done / (time.perf_counter() - start)


async def populate(url: str, recs: list[HandleRecord]) -> None:
    store = open_store(url)
    await store.open()
    try:
        await store.home_prefix(PREFIX, "bench")
        for i in range(0, len(recs), 2000):
            await store.put_many(recs[i : i + 2000])
    finally:
        await store.close()


# --- the run -----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.sched_setaffinity(0, {args.load_cpu})
    handles = hot_handles(args.handles)
    pkts = packets(handles)
    recs = records(handles)
    keys = [h.upper() for h in handles]
    report: dict[str, Any] = {
        "benchmark": "handle-udp",
        "seconds": args.seconds,
        "window": args.window,
        "hot_handles": args.handles,
        "server_cpu": args.server_cpu,
        "load_cpu": args.load_cpu,
        "results": {},
    }
    res = report["results"]

    port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "idnode.loadtest.ceilings", "--door", "udp", "--port", str(port)],
        preexec_fn=pinned([args.server_cpu]),
    )
    try:
        wait_udp(port, pkts[0], proc=echo)
        res["ceiling_udp_echo"] = udp_load(port, pkts, args.seconds, args.window)
    finally:
        stop(echo)
    ceiling = res["ceiling_udp_echo"]["answers_per_s"]

    tmp = Path(tempfile.mkdtemp(prefix="idnode-bench-"))
    sqlite_url = f"sqlite:///{tmp}/bench.db"
    log = tmp / "node.log"  # each node's output, for the error when one fails to start
    if "l1" in args.modes:
        upgrade(sqlite_url)
        asyncio.run(populate(sqlite_url, recs))
        node = start_node(sqlite_url, args.server_cpu, [], log, pkts[0])
        try:
            port = node.handle_port
            udp_load(port, pkts, 1.0, args.window)  # warm L1 with every hot handle
            r = udp_load(port, pkts, args.seconds, args.window)
        finally:
            node.stop()
        r["ratio_to_ceiling"] = round(r["answers_per_s"] / ceiling, 3)
        r["ceiling"] = "bare uvloop UDP echo (same packets, same load)"
        res["l1_hot"] = r

    if "redis" in args.modes and args.redis_url:
        if not Path(sqlite_url[len("sqlite:///") :]).exists():
            upgrade(sqlite_url)
            asyncio.run(populate(sqlite_url, recs))
        ns = f"idnode-bench-{secrets.token_hex(3)}"
        node = start_node(
            sqlite_url,
            args.server_cpu,
            ["--l1-max-mb", "0", "--redis-url", args.redis_url, "--redis-namespace", ns],
            log,
            pkts[0],
        )
        try:
            port = node.handle_port
            udp_load(port, pkts, 1.0, args.window)  # fills Redis
            r = udp_load(port, pkts, args.seconds, args.window)
        finally:
            node.stop()
        mget = asyncio.run(
            mget_ceiling(args.redis_url, [f"{ns}:h:{k}" for k in keys], args.seconds)
        )
        r["ceiling_mget_keys_per_s"] = round(mget)
        r["ratio_to_ceiling"] = round(r["answers_per_s"] / mget, 3)
        r["ratio_to_udp_echo"] = round(r["answers_per_s"] / ceiling, 3)
        res["redis_hit_l1_off"] = r
        clear_namespace(args.redis_url, ns)

    if "postgres" in args.modes and args.pg_url:
        name = f"idnode_bench_{secrets.token_hex(3)}"
        url = asyncio.run(create_database(args.pg_url, name))
        try:
            upgrade(url)
            asyncio.run(populate(url, recs))
            node = start_node(url, args.server_cpu, ["--l1-max-mb", "0"], log, pkts[0])
            try:
                port = node.handle_port
                udp_load(port, pkts, 1.0, args.window)
                r = udp_load(port, pkts, args.seconds, args.window)
            finally:
                node.stop()
            anyq = asyncio.run(any_ceiling(url, keys, args.seconds, cycle=True))
            r["ceiling_sql_batch_keys_per_s"] = round(anyq)
            r["ratio_to_ceiling"] = round(r["answers_per_s"] / anyq, 3)
            r["ratio_to_udp_echo"] = round(r["answers_per_s"] / ceiling, 3)
            res["postgres_miss_l1_l2_off"] = r
        finally:
            asyncio.run(drop_database(args.pg_url, name))
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per mode")
    p.add_argument("--handles", type=int, default=1000, help="hot handles (default 1000)")
    p.add_argument("--window", type=int, default=64, help="requests in flight (default 64)")
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument(
        "--modes", default="l1,redis,postgres", help="comma-separated: l1, redis, postgres"
    )
    p.add_argument(
        "--redis-url",
        default=os.environ.get("IDNODE_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis for the redis mode ('' to skip)",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "IDNODE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server URL where a scratch database may be created ('' to skip)",
    )
    p.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    args = p.parse_args(argv)
    args.modes = set(args.modes.split(","))
    report = run(args)
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
