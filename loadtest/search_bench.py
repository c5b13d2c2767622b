"""What the value index (``--search-index``) costs: bytes per identifier and write rate.

Two scratch databases on one PostgreSQL server, both migrated; one store keeps the
index, the other does not. N identifiers of the load test's keyspace (loadtest/keyspace.py:
a URL, a TEMPLATE and a productName each, all three searchable) are written through the
registry's batch path (``create_many``, as a REST or gRPC batch writes), batches
alternating between the two databases so both see the same machine; then a few hundred
single-handle creates (``mutate``, as a REST PUT writes) alternating the same way.

Reported: ``pg_total_relation_size`` of ``search_values`` (table, its (type, data)
index and its hash index on handle) per identifier, next to the handles table's own, and
each write rate with the index as a ratio of the rate without it.

    python -m idnode.loadtest.search_bench --database-url postgresql://postgres@127.0.0.1/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import sys
import time
from typing import Any

from idnode.registry.migrate import upgrade
from idnode.registry.postgres_store import PostgresStore
from idnode.registry.store import HandleRecord, Outcome
from idnode.registry.value_search import switch_on

from .keyspace import record
from .scratch_db import create_database, drop_database

SINGLES = 400


async def _sizes(store: PostgresStore) -> dict[str, int]:
    async with store.pool.acquire() as c:
        await c.execute("VACUUM ANALYZE handles")
        await c.execute("VACUUM ANALYZE search_values")
        return {
            "handles": int(await c.fetchval("SELECT pg_total_relation_size('handles')")),
            "search_values": int(
                await c.fetchval("SELECT pg_total_relation_size('search_values')")
            ),
            "search_rows": int(await c.fetchval("SELECT count(*) FROM search_values")),
        }


async def bench(server_url: str, identifiers: int, batch: int) -> dict[str, Any]:
    tag = f"idnode_search_bench_{os.getpid()}_{secrets.token_hex(3)}"
    names = {"off": tag + "_off", "on": tag + "_on"}
    stores: dict[str, PostgresStore] = {}
    try:
        for side, name in names.items():
            url = await create_database(server_url, name)
            await asyncio.to_thread(upgrade, url)
            store = stores[side] = PostgresStore(url, pool_size=2)
            await store.open()
            if side == "on":
                switch_on(store)
        spent = {"off": 0.0, "on": 0.0}
        for start in range(0, identifiers, batch):
            records = [
                HandleRecord(*record(i)) for i in range(start, min(identifiers, start + batch))
            ]
            for side in ("off", "on") if (start // batch) % 2 == 0 else ("on", "off"):
                t = time.perf_counter()
                await stores[side].create_many(records, actor="bench", op="CREATE")
                spent[side] += time.perf_counter() - t
        single = {"off": 0.0, "on": 0.0}
        for j in range(SINGLES):
            handle, vals = record(identifiers + j)

            def create(_before: bytes | None, v: bytes = vals) -> Outcome:
                return Outcome(v)

            for side in ("off", "on") if j % 2 == 0 else ("on", "off"):
                t = time.perf_counter()
                await stores[side].mutate(handle, create, actor="bench", op="CREATE")
                single[side] += time.perf_counter() - t
        sizes = {side: await _sizes(s) for side, s in stores.items()}
    finally:
        for s in stores.values():
            await s.close()
        for name in names.values():
            await drop_database(server_url, name)
    n = identifiers + SINGLES
    on = sizes["on"]
    return {
        "identifiers": n,
        "batch": batch,
        "indexed_values_per_identifier": round(on["search_rows"] / n, 2),
        "search_index_bytes_per_identifier": round(on["search_values"] / n, 1),
        "handles_bytes_per_identifier": round(sizes["off"]["handles"] / n, 1),
        "batch_writes_per_s": {
            "without": round(identifiers / spent["off"]),
            "with": round(identifiers / spent["on"]),
        },
        "batch_write_rate_ratio": round(spent["off"] / spent["on"], 3),
        "single_writes_per_s": {
            "without": round(SINGLES / single["off"]),
            "with": round(SINGLES / single["on"]),
        },
        "single_write_rate_ratio": round(single["off"] / single["on"], 3),
    }


def summary(r: dict[str, Any]) -> str:
    return (
        f"{r['identifiers']:,} identifiers, {r['indexed_values_per_identifier']} searchable "
        f"values each: value index {r['search_index_bytes_per_identifier']} B/identifier "
        f"(handles table {r['handles_bytes_per_identifier']} B); batch writes "
        f"{r['batch_writes_per_s']['with']:,}/s with vs {r['batch_writes_per_s']['without']:,}/s "
        f"without (ratio {r['batch_write_rate_ratio']}); single writes ratio "
        f"{r['single_write_rate_ratio']}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--database-url",
        default=os.environ.get("IDNODE_TEST_DATABASE_URL", ""),
        help="a PostgreSQL server where scratch databases may be made and dropped",
    )
    p.add_argument("--identifiers", type=int, default=100_000, help="written to each side")
    p.add_argument("--batch", type=int, default=1000, help="records per batch write")
    args = p.parse_args(argv)
    if not args.database_url:
        print("error: give --database-url (or IDNODE_TEST_DATABASE_URL)", file=sys.stderr)
        return 2
    report = asyncio.run(bench(args.database_url, args.identifiers, args.batch))
    print(summary(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
