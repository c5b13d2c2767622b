"""Read the registry into the OS page cache before a run measures it.

A registry loaded minutes before a run, or pushed out of the cache by other work since,
answers its first lookups of each page from the disk: PostgreSQL's backends wait in
DataFileRead for seconds, the node's batches time out, and the run measures the disk,
not the node. A node in production serves a registry its traffic has long warmed, so
the miss path is judged on a warm one, and the report says whether and how it was
warmed (and each point says what was still read from the disk: host_stats.py).

PostgreSQL: ``pg_prewarm(rel, 'read')`` (the contrib extension, part of Debian's server
package) over the handles table, its partitions and their indexes, when they fit in
half the memory available; it reads through the OS cache and leaves shared_buffers
alone. SQLite: the file read once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Progress = Callable[[str], None]
CHUNK = 8 << 20

# Every relation holding handles: the table, or its partitions (a registry run with
# --partitions; pg_partition_tree lists nothing for a plain table), and their indexes;
# whether each is a primary key.
_RELATIONS = """
WITH tables AS (
    SELECT relid FROM pg_partition_tree('handles') WHERE isleaf
    UNION
    SELECT oid FROM pg_class WHERE oid = 'handles'::regclass AND relkind = 'r'
)
SELECT relid::regclass::text, pg_relation_size(relid), false FROM tables
UNION ALL
SELECT i.indexrelid::regclass::text, pg_relation_size(i.indexrelid), i.indisprimary
FROM pg_index i JOIN tables t ON i.indrelid = t.relid
"""


MEMINFO = Path("/proc/meminfo")


def available_bytes() -> int:
    """MemAvailable (what the page cache can hold without pushing out what is in use);
    0 when unknown."""
    try:
        for line in MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def prewarm(url: str, say: Progress) -> dict[str, Any]:
    """Warm the registry at ``url``; what was done, for the report."""
    if url.startswith("sqlite"):
        return _prewarm_file(Path(url.split("///", 1)[1]), say)
    import asyncio

    return asyncio.run(_prewarm_postgres(url, say))


def _fits(size: int) -> str:
    room = available_bytes()
    if room and size > room // 2:
        return (
            f"the registry ({size / 1e9:.1f} GB) is over half the memory available "
            f"({room / 1e9:.1f} GB): left cold; the run reads from the disk"
        )
    return ""


def _prewarm_file(path: Path, say: Progress) -> dict[str, Any]:
    size = path.stat().st_size
    too_big = _fits(size)
    if too_big:
        say(too_big)
        return {"done": False, "why": too_big}
    t0 = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(CHUNK):
            pass
    took = time.perf_counter() - t0
    say(f"prewarmed the SQLite registry: {size / 1e6:,.0f} MB in {took:.1f} s")
    return {"done": True, "how": "file read once", "bytes": size, "seconds": round(took, 1)}


async def _prewarm_postgres(url: str, say: Progress) -> dict[str, Any]:
    import asyncpg

    c = await asyncpg.connect(url)
    try:
        rels = [(str(r[0]), int(r[1])) for r in await c.fetch(_RELATIONS)]  # every one
        size = sum(n for _, n in rels)
        too_big = _fits(size)
        if too_big:
            say(too_big)
            return {"done": False, "why": too_big, "bytes": size}
        try:
            await c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        except asyncpg.PostgresError as exc:
            why = f"pg_prewarm is not available ({exc}): the registry is left cold"
            say(why)
            return {"done": False, "why": why, "bytes": size}
        say(f"prewarming {len(rels)} registry relations ({size / 1e9:.2f} GB) with pg_prewarm")
        t0 = time.perf_counter()
        for rel, _ in rels:
            await c.fetchval("SELECT pg_prewarm($1::regclass, 'read')", rel, timeout=3600)
        took = time.perf_counter() - t0
    finally:
        await c.close()
    say(f"prewarmed the registry in {took:.1f} s")
    return {
        "done": True,
        "how": "pg_prewarm read",
        "relations": len(rels),
        "bytes": size,
        "seconds": round(took, 1),
    }


async def prewarm_primary_key(url: str) -> dict[str, Any]:
    """Read only the handles primary key (every partition's) into the OS page cache, as
    hours of production traffic would have; the table itself is not (``loadtest scale``:
    its heap reads show what memory does or does not hold)."""
    import asyncpg

    c = await asyncpg.connect(url)
    try:
        await c.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        blocks = 0
        for rel, _, primary in await c.fetch(_RELATIONS):
            if primary:
                blocks += int(await c.fetchval("SELECT pg_prewarm($1::regclass, 'read')", rel))
        size = await c.fetchval("SELECT current_setting('block_size')::int")
        return {"prewarmed_index_bytes": blocks * int(size)}
    except asyncpg.PostgresError as exc:  # no extension, no rights: say so, measure cold
        return {"prewarmed_index_bytes": 0, "prewarm_skipped": str(exc)}
    finally:
        await c.close()
