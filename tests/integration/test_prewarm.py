"""The load test's registry prewarm against a real PostgreSQL and a real SQLite file:
every relation holding handles is read (a hash-partitioned registry's partitions and
their indexes included), and a registry that does not fit is left cold, saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from idnode.loadtest import prewarm as warm
from idnode.loadtest.populate import populate_postgres, populate_sqlite


async def relation_bytes(url: str) -> int:
    c = await asyncpg.connect(url)
    try:
        # the main fork of each leaf table and of each of its indexes
        return int(
            await c.fetchval(
                "SELECT sum(pg_relation_size(t) + pg_indexes_size(t)) FROM ("
                " SELECT relid AS t FROM pg_partition_tree('handles') WHERE isleaf"
                " UNION SELECT 'handles'::regclass WHERE NOT EXISTS"
                " (SELECT 1 FROM pg_partition_tree('handles'))) leaves"
            )
        )
    finally:
        await c.close()


@pytest.mark.parametrize("partitions", [0, 4])
def test_postgres_registry_is_read_whole(pg_url: str, partitions: int) -> None:
    asyncio.run(populate_postgres(pg_url, 0, 3000, partitions=partitions, parallel=1))
    said: list[str] = []
    got = warm.prewarm(pg_url, said.append)
    assert got["done"] is True and got["how"] == "pg_prewarm read", got
    # the table and its primary key at least; four partitions and theirs when partitioned
    assert got["relations"] >= (8 if partitions else 2), got
    # every byte of every leaf table and index
    assert got["bytes"] == asyncio.run(relation_bytes(pg_url)), got
    assert any("prewarmed the registry" in s for s in said), said


def test_a_registry_over_half_the_memory_is_left_cold(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asyncio.run(populate_postgres(pg_url, 0, 500, parallel=1))
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 100 kB\nMemAvailable: 16 kB\n")
    monkeypatch.setattr(warm, "MEMINFO", meminfo)
    said: list[str] = []
    got = warm.prewarm(pg_url, said.append)
    assert got["done"] is False and "over half the memory available" in got["why"], got
    assert said == [got["why"]]


def test_sqlite_registry_file_is_read_once(tmp_path: Path) -> None:
    from idnode.registry.migrate import upgrade

    db = tmp_path / "r.db"
    upgrade(f"sqlite:///{db}")
    populate_sqlite(str(db), 0, 2000)
    got = warm.prewarm(f"sqlite:///{db}", lambda _m: None)
    assert got["done"] is True and got["bytes"] == db.stat().st_size > 0, got
