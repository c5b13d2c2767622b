"""A hash-partitioned handles table (PostgreSQL), from ``idnode init --partitions N``.

For registries of billions: each partition's table and primary key stay a size that
VACUUM, index rebuilds and backups handle, and a lookup by key still touches one
partition (the store's batched read is a join that prunes partitions per key). The
partition key is the handle, the table's primary key: the same column a distributed
PostgreSQL (Citus) would distribute it by (README, "Moving to Citus").

Made once, on an empty table, right after the migrations: a table that holds rows is
never rewritten behind the operator's back (that is a dump and reload). Run again with
the same N it does nothing; with another N, or on a plain table that holds handles, it
refuses and says why. Migrations written after it must keep to the rules in
``registry/migrations/README.md``.
"""

from __future__ import annotations

from typing import Any

from .store import StoreError

MIN_PARTITIONS = 2
MAX_PARTITIONS = 1024

# The parent's partitions (0 rows when the table is a plain one).
_COUNT = """
SELECT count(*) FROM pg_inherits i JOIN pg_partitioned_table p ON p.partrelid = i.inhparent
WHERE i.inhparent = 'handles'::regclass
"""
_IS_PARTITIONED = (
    "SELECT EXISTS (SELECT 1 FROM pg_partitioned_table WHERE partrelid = 'handles'::regclass)"
)


def check_count(partitions: int) -> None:
    if not MIN_PARTITIONS <= partitions <= MAX_PARTITIONS:
        raise StoreError(f"--partitions is {MIN_PARTITIONS}..{MAX_PARTITIONS} (got {partitions})")


async def handles_partitions(c: Any) -> int:
    """How many hash partitions the handles table has on connection ``c`` (asyncpg);
    0 for a plain table."""
    if not await c.fetchval(_IS_PARTITIONED):
        return 0
    return int(await c.fetchval(_COUNT))


async def partition_handles(c: Any, partitions: int) -> None:
    """Replace the (empty) handles table by one hash-partitioned on the handle key,
    with the same columns, collation, defaults and primary key name, in one
    transaction (asyncpg connection ``c``)."""
    check_count(partitions)
    async with c.transaction():
        # LIKE copies the columns with their types and collations ("C" on the key,
        # migration 0007) and, with INCLUDING DEFAULTS, their defaults; the primary key
        # is added by name below, so migrations and the bulk loader find handles_pkey.
        await c.execute(
            "CREATE TABLE handles_p (LIKE handles INCLUDING DEFAULTS) PARTITION BY HASH (handle)"
        )
        for k in range(partitions):
            await c.execute(
                f"CREATE TABLE handles_p{k:04d} PARTITION OF handles_p"
                f" FOR VALUES WITH (MODULUS {partitions}, REMAINDER {k})"
            )
        await c.execute("DROP TABLE handles")
        await c.execute("ALTER TABLE handles_p RENAME TO handles")
        await c.execute("ALTER TABLE handles ADD CONSTRAINT handles_pkey PRIMARY KEY (handle)")


async def ensure_partitions(url: str, partitions: int) -> str:
    """Make the handles table of the (migrated) registry at ``url`` hash-partitioned
    into ``partitions``: what was done, for the operator."""
    check_count(partitions)
    if not url.startswith(("postgresql://", "postgres://")):
        raise StoreError("--partitions needs a PostgreSQL registry (SQLite has no partitions)")
    import asyncpg

    c = await asyncpg.connect(url)
    try:
        # One init at a time: two running at once must not both partition the table.
        async with c.transaction():
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('idnode.partitions'))")
            have = await handles_partitions(c)
            if have == partitions:
                return f"handles table already hash-partitioned into {have}; nothing to do"
            if have:
                raise StoreError(
                    f"the handles table is hash-partitioned into {have}, not {partitions}: "
                    "repartitioning a registry is a dump and reload into a new one "
                    f"(idnode init --partitions {partitions} on an empty database)"
                )
            if await c.fetchval("SELECT EXISTS (SELECT 1 FROM handles)"):
                raise StoreError(
                    "the handles table already holds handles: --partitions makes a new "
                    "registry's table; load this one's rows into a registry made with it"
                )
            await partition_handles(c, partitions)  # a savepoint in this transaction
    finally:
        await c.close()
    return f"handles table hash-partitioned into {partitions} (handles_p0000..)"
