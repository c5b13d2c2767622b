"""Why the embedded store calls sqlite3 on the event loop: lookups/s of each access path.

Measures, on one registry file of ``--handles`` rows, in the same run:
point lookups through the store (sqlite3 on the loop), batches of 100 through the
store, and point lookups through aiosqlite (a thread hop per query) when it is
installed (``pip install aiosqlite``; it is not a dependency).

    python -m idnode.loadtest.sqlite_access_bench
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import tempfile
import time
from typing import Any

from idnode.registry.migrate import upgrade
from idnode.registry.store import open_store

from .udp_bench import hot_handles, populate, records


async def measure(url: str, path: str, keys: list[str], seconds: float) -> dict[str, Any]:
    store = open_store(url)
    await store.open()
    out: dict[str, Any] = {}
    try:
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for k in keys[:1000]:
                await store.get_many([k])
            n += 1000
        out["store_point_lookups_per_s"] = round(n / (time.perf_counter() - t))
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for i in range(0, len(keys), 100):
                await store.get_many(keys[i : i + 100])
                n += len(keys[i : i + 100])
        out["store_batch100_keys_per_s"] = round(n / (time.perf_counter() - t))
    finally:
        await store.close()
    if importlib.util.find_spec("aiosqlite") is None:
        out["aiosqlite_point_lookups_per_s"] = "not installed"
        return out
    import aiosqlite

    async with aiosqlite.connect(path) as db:
        n, t = 0, time.perf_counter()
        while time.perf_counter() - t < seconds:
            for k in keys[:1000]:
                async with db.execute(
                    "SELECT handle, vals FROM handles WHERE handle = ?", (k,)
                ) as c:
                    await c.fetchall()
            n += 1000
        out["aiosqlite_point_lookups_per_s"] = round(n / (time.perf_counter() - t))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--handles", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    d = tempfile.mkdtemp(prefix="idnode-sqlite-bench-")
    path = f"{d}/r.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    handles = hot_handles(args.handles)
    asyncio.run(populate(url, records(handles)))
    keys = [h.upper() for h in handles]
    print(json.dumps(asyncio.run(measure(url, path, keys, args.seconds)), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
