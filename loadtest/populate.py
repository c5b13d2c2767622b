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
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any

from idnode.registry.partitions import partition_handles

from .keyspace import NODE_PREFIX, handle

_I = struct.Struct(">i")
_U = struct.Struct(">I")
_TS = 1_700_000_000


_AFTER_TS = b"\x00\x00\x01\x51\x80\x0e"  # ttlType 0, ttl 86400, permissions 0x0E
_NO_REFS = b"\x00\x00\x00\x00"
_URL_HEAD = b"\x00\x00\x00\x03" + _I.pack(1)  # 3 values; the first at index 1
_URL_TYPE = _AFTER_TS + _U.pack(3) + b"URL"
_TEMPLATE_HEAD = _NO_REFS + _I.pack(1001)
_TEMPLATE_TAIL = _AFTER_TS + _U.pack(8) + b"TEMPLATE" + _U.pack(6) + b"tpl-v1" + _NO_REFS
_NAME_HEAD = _I.pack(2001)
_NAME = "液压阀 HV-".encode()
_NAME_TYPE = _AFTER_TS + _U.pack(11) + b"productName" + _U.pack(len(_NAME) + 3) + _NAME


def values_wire(i: int) -> bytes:
    """The same values as keyspace.values(i) (a unit test holds them equal), encoded
    from constant pieces: generating rows must not be what limits the load."""
    ts = _U.pack(_TS + (i % 86_400_000))
    url = b"https://pim.example.cn/%d" % i
    return b"".join(
        (
            _URL_HEAD,
            ts,
            _URL_TYPE,
            _U.pack(len(url)),
            url,
            _TEMPLATE_HEAD,
            ts,
            _TEMPLATE_TAIL,
            _NAME_HEAD,
            ts,
            _NAME_TYPE,
            b"%03d" % (i % 1000),
            _NO_REFS,
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

# PostgreSQL's binary COPY format: signature, flags, header extension length; per row
# a field count and length-prefixed fields; -1 as the trailer.
COPY_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
COPY_TRAILER = b"\xff\xff"
_FIELDS = b"\x00\x07"


def copy_rows(start: int, count: int, t: int) -> bytes:
    """Rows start..start+count-1 as binary COPY tuples (no header or trailer).

    Built by hand because generating rows is the loader's hot path: asyncpg's record
    encoder and a tuple per row cost more than the database's insert on this machine.
    """
    pack = _I.pack
    tail = struct.pack(">iiiqiq", 4, 1, 8, t, 8, t)  # version 1, created_at, updated_at
    parts = []
    for i in range(start, start + count):
        h = handle(i).encode()
        key = h.upper()
        pfx = key[: key.index(b"/")]
        v = values_wire(i)
        parts.append(
            b"".join(
                (
                    _FIELDS,
                    pack(len(key)),
                    key,
                    pack(len(h)),
                    h,
                    pack(len(pfx)),
                    pfx,
                    pack(len(v)),
                    v,
                    tail,
                )
            )
        )
    return b"".join(parts)


# The index a bulk load into an empty table builds afterwards (sorted, in bulk) instead of
# maintaining row by row: the handles' random order makes per-row B-tree upkeep the
# load's largest cost once the index outgrows shared_buffers.
_DEFERRED = (
    ("handles_pkey", "ALTER TABLE handles ADD CONSTRAINT handles_pkey PRIMARY KEY (handle)"),
)


async def populate_postgres(
    url: str,
    start: int,
    count: int,
    *,
    chunk: int = 50_000,
    parallel: int = 2,
    defer_indexes: bool | None = None,
    partitions: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """``parallel`` COPY streams, each its own connection (and server process).

    ``defer_indexes``: drop the handles indexes, load, then build them (default: when
    the table is empty). If the load fails the indexes are rebuilt all the same.
    """
    import asyncio
    import io

    import asyncpg

    conns = [await asyncpg.connect(url) for _ in range(max(1, parallel))]
    c = conns[0]
    index_seconds = 0.0
    deferred = False
    try:
        await c.execute(
            "INSERT INTO prefixes (prefix, display, owner, status, created_at) VALUES"
            " ($1, $1, 'loadtest', 'homed', 0) ON CONFLICT (prefix) DO NOTHING",
            NODE_PREFIX,
        )
        empty = await c.fetchval("SELECT NOT EXISTS (SELECT 1 FROM handles)")
        if partitions:
            if not empty:
                raise ValueError("--partitions needs an empty handles table")
            await partition_handles(c, partitions)
        if defer_indexes is None:
            defer_indexes = empty
        for conn in conns:  # a bulk load is re-runnable: no need to wait for each flush
            await conn.execute("SET synchronous_commit = off")
        if defer_indexes:
            async with c.transaction():
                await c.execute("ALTER TABLE handles DROP CONSTRAINT IF EXISTS handles_pkey")
            deferred = True
        t0 = time.perf_counter()
        done = 0
        stamp = int(time.time())
        starts = list(range(start, start + count, chunk))
        loop = asyncio.get_running_loop()
        # rows are generated in other processes: one Python thread makes ~240k rows/s,
        # which with the database's own work on the same cores is below the goal
        pool = ProcessPoolExecutor(max_workers=len(conns), mp_context=get_context("spawn"))

        async def stream(conn: Any, mine: list[int]) -> None:
            nonlocal done
            for s0 in mine:
                n = min(chunk, start + count - s0)
                # generate the next chunk while the database takes this one
                data = await loop.run_in_executor(pool, copy_rows, s0, n, stamp)
                await conn.copy_to_table(
                    "handles",
                    source=io.BytesIO(COPY_HEADER + data + COPY_TRAILER),
                    columns=COLUMNS,
                    format="binary",
                )
                done += n
                if progress is not None:
                    progress(done, time.perf_counter() - t0)

        try:
            await asyncio.gather(*(stream(k, starts[i :: len(conns)]) for i, k in enumerate(conns)))
        finally:
            pool.shutdown(cancel_futures=True)
        load_seconds = time.perf_counter() - t0
    finally:
        if deferred:
            t1 = time.perf_counter()
            await c.execute("SET maintenance_work_mem = '1GB'")
            for name, ddl in _DEFERRED:
                exists = await c.fetchval("SELECT to_regclass($1) IS NOT NULL", name)
                if not exists:
                    await c.execute(ddl)
            index_seconds = time.perf_counter() - t1
        for conn in conns[1:]:
            await conn.close()
    try:
        elapsed = time.perf_counter() - t0
        await c.execute("ANALYZE handles")
        total = await c.fetchval("SELECT count(*) FROM handles")
        size, table, _ = await handles_footprint(c)
    finally:
        await c.close()
    out = _report("postgresql", count, elapsed, int(total), int(size), int(table))
    out["copy_seconds"] = round(load_seconds, 2)
    out["index_build_seconds"] = round(index_seconds, 2)
    out["indexes_deferred"] = deferred
    out["parallel_streams"] = len(conns)
    out["hash_partitions"] = partitions or None
    return out


# Over the tables that hold rows: a partitioned parent has no storage of its own (and
# pg_partition_tree lists nothing for a plain table, which holds them itself).
_FOOTPRINT = """
SELECT sum(pg_total_relation_size(c.oid)), sum(pg_relation_size(c.oid)),
       sum(GREATEST(c.reltuples, 0))
FROM pg_class c
WHERE c.relkind = 'r'
  AND c.oid IN (SELECT relid FROM pg_partition_tree('handles')
                UNION SELECT 'handles'::regclass)
"""


async def handles_footprint(c: Any) -> tuple[int, int, int]:
    """(bytes with TOAST and indexes, table bytes, estimated rows) of the handles table,
    partitioned or not."""
    total, table, rows = await c.fetchrow(_FOOTPRINT)
    return int(total or 0), int(table or 0), int(rows or 0)


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
