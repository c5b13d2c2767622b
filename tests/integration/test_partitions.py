"""`idnode init --partitions N`: a hash-partitioned handles table from the start, the
migrations and the store's operations on it, and what a rerun does."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command

from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.admin_tasks import open_registry
from idnode.registry.migrate import alembic_config
from idnode.registry.partitions import handles_partitions
from idnode.registry.store import KEEP, HandleRecord, Outcome
from idnode.resolver.codec import HandleValue, decode_values, encode_values
from tests.e2e.node_process import IDNODE, init_registry

PARTITIONS = 8


def idnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def partitioned(
    pg_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, str]]:
    """(database URL, node key file, what init printed): a new, empty database made by
    `idnode init --partitions 8`."""
    name = f"idnode_part_{secrets.token_hex(4)}"
    url = asyncio.run(create_database(pg_server[0], name))
    tmp = tmp_path_factory.mktemp("partitions")
    reg = init_registry(
        tmp, "p", "--partitions", str(PARTITIONS), "--admin-secret", "s3cret", database_url=url
    )
    yield url, reg.key, reg.output
    asyncio.run(drop_database(pg_server[0], name))


async def _fetch(url: str, sql: str) -> list[asyncpg.Record]:
    c = await asyncpg.connect(url)
    try:
        return list(await c.fetch(sql))
    finally:
        await c.close()


async def _execute(url: str, sql: str) -> None:
    c = await asyncpg.connect(url)
    try:
        await c.execute(sql)
    finally:
        await c.close()


async def _partitions(url: str) -> int:
    c = await asyncpg.connect(url)
    try:
        return await handles_partitions(c)
    finally:
        await c.close()


def test_init_makes_the_partitioned_table(partitioned: tuple[str, str, str]) -> None:
    url, _, output = partitioned
    assert f"hash-partitioned into {PARTITIONS}" in output
    assert asyncio.run(_partitions(url)) == PARTITIONS
    # the key keeps its byte-order collation (0007) and the primary key its name
    (col,) = asyncio.run(
        _fetch(
            url,
            "SELECT collation_name FROM information_schema.columns"
            " WHERE table_name = 'handles' AND column_name = 'handle'",
        )
    )
    assert col[0] == "C"
    pk = asyncio.run(_fetch(url, "SELECT conname FROM pg_constraint WHERE conname='handles_pkey'"))
    assert len(pk) == 1
    # init's own record (the prefix admin's 0.NA/88.166) went into a partition
    rows = asyncio.run(_fetch(url, "SELECT count(*) FROM handles"))
    only = asyncio.run(_fetch(url, "SELECT count(*) FROM ONLY handles"))
    assert rows[0][0] == 1 and only[0][0] == 0  # the parent holds nothing itself


def test_rerun_same_n_does_nothing_other_n_refuses(
    partitioned: tuple[str, str, str], tmp_path: Path
) -> None:
    url, key, _ = partitioned
    base = ("init", "--prefix", "88.166", "--database-url", url, "--secret-key-file", key)
    again = idnode(*base, "--partitions", str(PARTITIONS))
    assert again.returncode == 0, again.stderr
    assert "already hash-partitioned into 8; nothing to do" in again.stdout
    other = idnode(*base, "--partitions", "4")
    assert other.returncode == 2
    assert "hash-partitioned into 8, not 4" in other.stderr
    plain = idnode(*base)  # without the option: the table is left as it is
    assert plain.returncode == 0, plain.stderr
    assert asyncio.run(_partitions(url)) == PARTITIONS
    bad = idnode(*base, "--partitions", "1")
    assert bad.returncode == 2 and "2..1024" in bad.stderr
    lite = idnode(
        "init",
        "--prefix",
        "88.166",
        "--partitions",
        "4",
        "--database-url",
        f"sqlite:///{tmp_path}/r.db",
        "--secret-key-file",
        str(tmp_path / "k"),
    )
    assert lite.returncode == 2 and "needs a PostgreSQL registry" in lite.stderr
    assert not (tmp_path / "r.db").exists()


def test_refuses_a_plain_table_that_holds_handles(pg_url: str, tmp_path: Path) -> None:
    # the prefix admin's 0.NA/ record is written into the (plain) table
    reg = init_registry(tmp_path, "plain", "--admin-secret", "s3cret", database_url=pg_url)
    p = idnode(
        "init",
        "--prefix",
        "88.166",
        "--partitions",
        "4",
        "--database-url",
        pg_url,
        "--secret-key-file",
        reg.key,
    )
    assert p.returncode == 2
    assert "already holds handles" in p.stderr
    assert asyncio.run(_partitions(pg_url)) == 0


def test_migrations_down_and_up_on_the_partitioned_table(
    partitioned: tuple[str, str, str],
) -> None:
    url, _, _ = partitioned
    cfg = alembic_config(url)
    # Every migration after 0007 downgrades and upgrades on it; 0007 and earlier change
    # the key column's type, which PostgreSQL refuses on a partition key (the rule in
    # registry/migrations/README.md), so a partitioned registry goes no lower than 0007.
    command.downgrade(cfg, "0007")
    command.upgrade(cfg, "head")
    with pytest.raises(Exception, match="partition key"):
        command.downgrade(cfg, "0006")
    command.upgrade(cfg, "head")  # the failed downgrade left everything in place
    assert asyncio.run(_partitions(url)) == PARTITIONS
    # A migration's ALTER TABLE / CREATE INDEX on the parent reach every partition.
    asyncio.run(
        _execute(
            url,
            "ALTER TABLE handles ADD COLUMN probe int NOT NULL DEFAULT 0;"
            " CREATE INDEX handles_probe ON handles (probe)",
        )
    )
    on_partitions = asyncio.run(
        _fetch(
            url,
            "SELECT count(*) FROM pg_indexes WHERE tablename LIKE 'handles_p%'"
            " AND indexdef LIKE '%(probe)%'",
        )
    )
    assert on_partitions[0][0] == PARTITIONS
    asyncio.run(_execute(url, "DROP INDEX handles_probe; ALTER TABLE handles DROP COLUMN probe"))


def _value(i: int, text: str) -> HandleValue:
    return HandleValue(i, "URL", text.encode())


def test_store_operations_on_the_partitioned_table(partitioned: tuple[str, str, str]) -> None:
    url, _, _ = partitioned

    async def run() -> None:
        async with open_registry(url) as store:
            names = [f"88.166/part-{i:03d}" for i in range(200)]
            recs = [HandleRecord(h, encode_values([_value(1, h)])) for h in names]
            made = await store.create_many(recs[:100], actor="t", op="BATCH_CREATE")
            assert all(rc == 1 for rc, _ in made.values())
            assert await store.put_many(recs[100:]) == 100
            keys = [store.key(h) for h in names]
            got = await store.get_many([*keys, store.key("88.166/none")])
            assert set(got) == set(keys)

            def change(before: bytes | None) -> Outcome:
                assert before is not None
                return Outcome(encode_values([_value(1, "https://changed")]), 1, None, "")

            await store.mutate(names[7], change, actor="t", op="MODIFY")
            (after,) = (await store.get_many([keys[7]])).values()
            assert decode_values(after)[0].data == b"https://changed"
            await store.mutate(names[8], lambda b: Outcome(None, 1, None, ""), actor="t", op="D")
            await store.mutate(names[9], lambda b: Outcome(KEEP, 1, None, ""), actor="t", op="K")
            listed = await store.list_handles("88.166")
            assert [h for h in listed if "part-" in h] == [n for n in names if n != names[8]]
            assert await store.count_prefix("88.166") == 199
            # the rows are spread over the partitions
            spread = await _fetch(
                url, "SELECT count(DISTINCT tableoid) FROM handles WHERE handle LIKE '88.166/%'"
            )
            assert spread[0][0] == PARTITIONS

    asyncio.run(run())


def test_batched_read_prunes_partitions(partitioned: tuple[str, str, str]) -> None:
    """The store's batched read (a join of the unnested keys) reads only the partitions
    its keys hash to. On a registry of millions the planner picks the nested loop of
    index lookups by itself; on these 200 rows a hash join over everything is cheaper,
    so the test turns that (and the sequential scans) off to see the plan at scale."""
    url, _, _ = partitioned

    async def explain() -> str:
        c = await asyncpg.connect(url)
        try:
            await c.execute(
                "SET enable_hashjoin = off; SET enable_mergejoin = off; SET enable_seqscan = off"
            )
            rows = await c.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT h.handle, h.vals FROM"
                " unnest(ARRAY['88.166/PART-001', '88.166/PART-002']) AS k(key)"
                " JOIN handles h ON h.handle = k.key"
            )
        finally:
            await c.close()
        return "\n".join(r[0] for r in rows)

    text = asyncio.run(explain())
    scans = [line for line in text.splitlines() if "Scan using" in line]
    assert len(scans) == PARTITIONS, text  # the plan names every partition ...
    executed = [line for line in scans if "(never executed)" not in line]
    assert 1 <= len(executed) <= 2, text  # ... and reads only those of the two keys
