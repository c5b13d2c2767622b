"""`idnode loadtest scale`: the same lookup workload at several registry sizes, and a
fit of how the cost per lookup grows with the size.

Every lookup reaches SQL (L1 and Redis off, identifiers drawn uniformly from the whole
key space, so the page cache helps only as much as it would in production), closed
loop from the load cores, over Handle UDP by default. At each size the ceiling is the
store's SQL key batch run bare through asyncpg on the same database. The fit is least
squares of the server-core microseconds per lookup (1e6 / lookups per second, with the
node's cores saturated) against log10 of the size, the shape B-tree descents predict;
it is extrapolated to the Chongqing target.

Registries come from ``--database-url`` (each already populated), or from
``--server-url`` with ``--sizes``: a database ``idnode_lt_<N>`` per size, populated
when missing (and kept for the next run).
"""

from __future__ import annotations

import math
import sys
from typing import Any

from .run import Progress, RunConfig, registry_facts, run

TARGET = 1_500_000_000


def fit_log(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares of y = a + b·log10(x); returns (a, b, r²)."""
    xs = [math.log10(x) for x, _ in points]
    ys = [y for _, y in points]
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    a = my - b * mx
    ss_tot = sum((y - my) ** 2 for y in ys)
    ss_res = sum((y - (a + b * x)) ** 2 for x, y in zip(xs, ys, strict=True))
    return a, b, (1 - ss_res / ss_tot) if ss_tot else 1.0


def ensure_database(server_url: str, size: int, say: Progress) -> str:
    """``idnode_lt_<size>`` on the server, populated with identifiers 0..size-1."""
    import asyncio

    import asyncpg

    from registry.migrate import upgrade

    from .populate import bar, populate_postgres

    name = f"idnode_lt_{size}"
    url = f"{server_url.rsplit('/', 1)[0]}/{name}"

    async def create() -> None:
        c = await asyncpg.connect(server_url)
        try:
            if not await c.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
                await c.execute(f'CREATE DATABASE "{name}"')
        finally:
            await c.close()

    asyncio.run(create())
    upgrade(url)  # Alembic runs its own event loop: not from inside one
    have = asyncio.run(registry_facts(url))["identifiers"]
    if abs(have - size) > size * 0.01:
        if have:
            raise ValueError(
                f"{name} holds {have:,} identifiers, not {size:,}: drop it or pass its URL "
                "with --database-url"
            )
        say(f"populating {name} with {size:,} identifiers")
        rep = asyncio.run(populate_postgres(url, 0, size, chunk=100_000, progress=bar(name, size)))
        say(f"  {rep['rows_per_s']:,} rows/s, {rep['bytes_per_identifier']} bytes per identifier")
    return url


def scale(
    urls: list[str], cfg: RunConfig, say: Progress = lambda m: print(m, file=sys.stderr)
) -> dict[str, Any]:
    points = []
    reports = []
    for url in urls:
        c = RunConfig(**{**cfg.__dict__})
        c.database_url, c.registry_size, c.l1_mb, c.redis_url = url, 0, 0, ""
        c.distribution, c.miss_share, c.mix, c.mode = "uniform", 0.0, "C", "closed"
        c.ceilings = False
        rep = run(c, say)
        reports.append(rep)
        size = rep["registry"]["identifiers_in_key_space"]
        door = c.doors[0]
        node = rep["doors"][door]["points"][-1]["node"]
        ceiling = rep.get("tier_ceilings", {}).get("postgres_batch_100_keys_per_s")
        points.append(
            {
                "registry_size": size,
                "door": door,
                "per_s": node["per_s"],
                "p50_us": node["p50_us"],
                "p90_us": node["p90_us"],
                "p99_us": node["p99_us"],
                "p999_us": node["p999_us"],
                "codes": node["codes"],
                "ceiling_sql_batch_keys_per_s": ceiling,
                "ratio_to_ceiling": round(node["per_s"] / ceiling, 3) if ceiling else None,
                "bytes_per_identifier": rep["registry"].get("bytes_per_identifier"),
                "us_per_lookup": round(1e6 / node["per_s"], 2) if node["per_s"] else None,
                "tiers": node.get("tiers"),
            }
        )
        say(f"  {size:,} identifiers: {node['per_s']:,} lookups/s, p50 {node['p50_us']} us")
    points.sort(key=lambda p: p["registry_size"])
    out: dict[str, Any] = {"points": points}
    usable = [(p["registry_size"], p["us_per_lookup"]) for p in points if p["us_per_lookup"]]
    if len({x for x, _ in usable}) >= 2:
        a, b, r2 = fit_log(usable)
        at = a + b * math.log10(TARGET)
        out["fit"] = {
            "model": "us_per_lookup = a + b * log10(identifiers)",
            "a": round(a, 3),
            "b": round(b, 3),
            "r2": round(r2, 3),
            "us_per_lookup_at_1_5e9": round(at, 2),
            "lookups_per_core_at_1_5e9": round(1e6 / at) if at > 0 else None,
            "text": (
                f"µs per SQL lookup = {a:.2f} + {b:.2f}·log10(N) (r² {r2:.2f}); at 1.5e9 "
                f"identifiers {at:.1f} µs, about {1e6 / at:,.0f} lookups/s per node core "
                "(extrapolated: the table then no longer fits in memory, so disk reads, "
                "not this fit, decide)"
                if at > 0
                else "fit not usable"
            ),
        }
    return {"runs": reports, "scale": out}
