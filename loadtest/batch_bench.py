"""Registration throughput through the batch path, beside a raw-insert ceiling.

In one run, on a scratch PostgreSQL database:

* ceiling: the same rows, pre-encoded, inserted with raw asyncpg ``unnest`` statements of
  2000 into a table shaped like ``handles`` (no validation, no audit, no service);
* service: ``RegistryService.batch_create`` in batches of 2000 by the node's prefix
  administrator, over 1200 enterprise prefixes: validation (including the metadata
  template every identifier names), HS_ADMIN authorisation, encoding, one multi-row
  insert and the audit rows per batch.

    python -m idnode.loadtest.batch_bench                      # 100,000 identifiers
    python -m idnode.loadtest.batch_bench --count 500000 --json results/batch.json
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import time
from typing import Any

import asyncpg

from idnode.loadtest.report import emit
from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.auth import Identity
from idnode.registry.migrate import upgrade
from idnode.registry.names import PrefixAuthority
from idnode.registry.service import RegistryService
from idnode.registry.store import HandleRecord, open_store
from idnode.resolver.codec import AdminRecord, HandleValue, encode_admin, encode_values
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS, ResponseCode

ADMIN = Identity("0.NA/88.166", 300)
TEMPLATE = {
    "prefix": "88.166",
    "version": "tpl-v1",
    "industry": "C/34/344/3443",
    "items": [{"key": "productName", "index": 2001, "required": True, "max_length": 64}],
}


def identifiers(n: int, start: int = 0) -> list[tuple[str, tuple[HandleValue, ...]]]:
    return [
        (
            f"88.166.{1001 + i % 1200}/SN-{i:010d}",
            (
                HandleValue(1, "URL", f"https://pim.example.cn/p/{i}".encode()),
                HandleValue(1001, "TEMPLATE", b"tpl-v1"),
                HandleValue(2001, "productName", "液压阀 HV-200".encode()),
            ),
        )
        for i in range(start, start + n)
    ]


async def ceiling(url: str, items: list[tuple[str, tuple[HandleValue, ...]]], batch: int) -> float:
    c = await asyncpg.connect(url)
    await c.execute("CREATE TABLE handles_ceiling (LIKE handles INCLUDING ALL)")
    rows = [(h.upper(), h, h.split("/")[0], encode_values(v)) for h, v in items]
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        part = rows[i : i + batch]
        cols = list(zip(*part, strict=True))
        await c.execute(
            "INSERT INTO handles_ceiling (handle, display, prefix, vals, version, created_at,"
            " updated_at) SELECT h, d, p, v, 1, 0, 0 FROM unnest($1::text[], $2::text[],"
            " $3::text[], $4::bytea[]) AS t(h, d, p, v)",
            list(cols[0]),
            list(cols[1]),
            list(cols[2]),
            list(cols[3]),
        )
    rate = len(rows) / (time.perf_counter() - start)
    await c.close()
    return rate


async def service_path(
    url: str, items: list[tuple[str, tuple[HandleValue, ...]]], batch: int
) -> dict[str, Any]:
    store = open_store(url)
    await store.open()
    try:
        await store.home_prefix("88.166")
        # The node's prefix administrator (not a server admin): every batch looks up the
        # HS_ADMIN of each enterprise prefix and its ancestors, as for any enterprise.
        admin = HandleValue(
            100,
            "HS_ADMIN",
            encode_admin(AdminRecord(ALL_ADMIN_PERMISSIONS, ADMIN.handle, ADMIN.index)),
        )
        await store.put_many([HandleRecord(ADMIN.handle, encode_values([admin]))])
        svc = RegistryService(store, PrefixAuthority(["88.166"]))
        # Every identifier names this template, so each batch is checked against it too.
        r = await svc.put_template(TEMPLATE, ADMIN)
        if not r.ok:
            raise RuntimeError(f"the benchmark's template was refused: {r.message}")
        ok = 0
        start = time.perf_counter()
        for i in range(0, len(items), batch):
            done = await svc.batch_create(items[i : i + batch], ADMIN)
            ok += sum(rc == ResponseCode.SUCCESS for _, rc, _ in done)
        elapsed = time.perf_counter() - start
        retry_start = time.perf_counter()  # an idempotent retry of the last batch
        await svc.batch_create(items[-batch:], ADMIN)
        retry = time.perf_counter() - retry_start
        return {
            "registered": ok,
            "per_s": round(ok / elapsed),
            "seconds": round(elapsed, 2),
            "idempotent_retry_of_one_batch_s": round(retry, 3),
        }
    finally:
        await store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "IDNODE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server URL where a scratch database may be created",
    )
    p.add_argument("--cpu", type=int, default=1, help="pin this process (-1: unpinned)")
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    name = f"idnode_batch_{secrets.token_hex(3)}"
    url = asyncio.run(create_database(args.pg_url, name))
    try:
        upgrade(url)
        items = identifiers(args.count)
        ceil = asyncio.run(ceiling(url, items, args.batch))
        res = asyncio.run(service_path(url, items, args.batch))
    finally:
        asyncio.run(drop_database(args.pg_url, name))
    report = {
        "benchmark": "batch-registration",
        "count": args.count,
        "batch": args.batch,
        "ceiling_raw_unnest_insert_per_s": round(ceil),
        "service": res,
        "ratio_to_ceiling": round(res["per_s"] / ceil, 3),
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
