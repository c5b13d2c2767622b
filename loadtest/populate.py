"""Bulk-load a slice of the key space into the registry, as fast as the database takes it.

PostgreSQL: binary COPY (asyncpg ``copy_records_to_table``) in chunks. SQLite: batched
``executemany`` in transactions. Reports rows/s and the bytes per identifier the
database actually uses (table, TOAST and indexes, read from the database).
"""

from __future__ import annotations

import os
import sqlite3
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

from .keyspace import NODE_PREFIX, handle

_I = struct.Struct(">i")
_U = struct.Struct(">I")
_TS = 1_700_000_000


def _value(index: int, vtype: bytes, data: bytes, ts: int) -> bytes:
    # index, timestamp, ttlType 0, ttl 86400, permissions 0x0E, type, data, no references
    return b"".join(
        (
            _I.pack(index),
            _U.pack(ts),
            b"\x00\x00\x01\x51\x80\x0e",
            _U.pack(len(vtype)),
            vtype,
            _U.pack(len(data)),
            data,
            b"\x00\x00\x00\x00",
        )
    )


_NAME = "液压阀 HV-".encode()


def values_wire(i: int) -> bytes:
    """The same values as keyspace.values(i), encoded without building HandleValues
    (generating rows must not be what limits the load)."""
    ts = _TS + (i % 86_400_000)
    return b"".join(
        (
            b"\x00\x00\x00\x03",
            _value(1, b"URL", b"https://pim.example.cn/%d" % i, ts),
            _value(1001, b"TEMPLATE", b"tpl-v1", ts),
            _value(2001, b"productName", _NAME + b"%03d" % (i % 1000), ts),
        )
    )


def rows(start: int, count: int) -> list[tuple[str, str, str, bytes, int, int, int]]:
    out = []
    t = int(time.time())
    for i in range(start, start + count):
        h = handle(i)
        key = h.upper()
        out.append((key, h, key.split("/", 1)[0], values_wire(i), 1, t, t))
    return out


COLUMNS = ["handle", "display", "prefix", "vals", "version", "created_at", "updated_at"]
Progress = Callable[[int, float], None]


async def populate_postgres(
    url: str,
    start: int,
    count: int,
    *,
    chunk: int = 50_000,
    parallel: int = 2,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``parallel`` COPY streams, each its own connection (and server process): one
    stream leaves the database waiting on a single core's index upkeep."""
    import asyncio

    import asyncpg

    conns = [await asyncpg.connect(url) for _ in range(max(1, parallel))]
    try:
        await conns[0].execute(
            "INSERT INTO prefixes (prefix, display, owner, status, created_at) VALUES"
            " ($1, $1, 'loadtest', 'homed', 0) ON CONFLICT (prefix) DO NOTHING",
            NODE_PREFIX,
        )
        for c in conns:  # a bulk load is re-runnable: no need to wait for each flush
            await c.execute("SET synchronous_commit = off")
        t0 = time.perf_counter()
        done = 0
        starts = list(range(start, start + count, chunk))

        async def stream(c: Any, mine: list[int]) -> None:
            nonlocal done
            for s0 in mine:
                n = min(chunk, start + count - s0)
                await c.copy_records_to_table("handles", records=rows(s0, n), columns=COLUMNS)
                done += n
                if progress is not None:
                    progress(done, time.perf_counter() - t0)

        await asyncio.gather(*(stream(c, starts[k :: len(conns)]) for k, c in enumerate(conns)))
        elapsed = time.perf_counter() - t0
        c = conns[0]
        await c.execute("ANALYZE handles")
        total = await c.fetchval("SELECT count(*) FROM handles")
        size = await c.fetchval("SELECT pg_total_relation_size('handles')")
        table = await c.fetchval("SELECT pg_relation_size('handles')")
    finally:
        for c in conns:
            await c.close()
    return _report("postgresql", count, elapsed, int(total), int(size), int(table))


def populate_sqlite(
    path: str, start: int, count: int, *, chunk: int = 50_000, progress: Progress | None = None
) -> dict[str, Any]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=OFF")
        db.execute(
            "INSERT INTO prefixes (prefix, display, owner, status, created_at) VALUES"
            " (?, ?, 'loadtest', 'homed', 0) ON CONFLICT (prefix) DO NOTHING",
            (NODE_PREFIX, NODE_PREFIX),
        )
        t0 = time.perf_counter()
        done = 0
        while done < count:
            n = min(chunk, count - done)
            db.execute("BEGIN")
            db.executemany(
                "INSERT INTO handles (handle, display, prefix, vals, version,"
                " created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows(start + done, n),
            )
            db.execute("COMMIT")
            done += n
            if progress is not None:
                progress(done, time.perf_counter() - t0)
        elapsed = time.perf_counter() - t0
        (total,) = db.execute("SELECT count(*) FROM handles").fetchone()
        size = os.path.getsize(path) + (
            os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
        )
    finally:
        db.close()
    return _report("sqlite", count, elapsed, int(total), int(size), int(size))


def _report(
    backend: str, count: int, elapsed: float, total: int, size: int, table: int
) -> dict[str, Any]:
    return {
        "backend": backend,
        "loaded": count,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(count / elapsed) if elapsed else None,
        "registry_rows": total,
        "bytes_total": size,
        "bytes_per_identifier": round(size / total, 1) if total else None,
        "table_bytes_per_identifier": round(table / total, 1) if total else None,
    }


def bar(label: str, total: int) -> Progress:
    """A one-line progress bar on stderr (only when stderr is a terminal)."""
    tty = sys.stderr.isatty()

    def show(done: int, elapsed: float) -> None:
        if not tty:
            return
        width = 30
        filled = int(width * done / total)
        rate = done / elapsed if elapsed else 0
        eta = (total - done) / rate if rate else 0
        print(
            f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} "
            f"{rate:,.0f}/s eta {eta:,.0f}s",
            end="",
            file=sys.stderr,
            flush=True,
        )
        if done >= total:
            print(file=sys.stderr)

    return show
