"""`idnode loadtest scale`: the same lookup workload at several registry sizes, and a
fit of how the cost per lookup grows with the size.

Every lookup reaches SQL (L1 and Redis off, identifiers drawn uniformly from the whole
key space, so the page cache helps only as much as it would in production), closed
loop from the load cores, over Handle UDP by default. At each size the ceiling is the
store's SQL key batch run bare through asyncpg on the same database. The fit is least
squares of the server-core microseconds per lookup (1e6 / lookups per second, with the
node's cores saturated) against log10 of the size, the shape B-tree descents predict;
it is extrapolated to the Chongqing target.

Before each size the primary key is read into the OS page cache (pg_prewarm), as a
production node's would be after hours of traffic; the table is not, so heap reads
show what memory does or does not hold (``--no-prewarm`` measures cold).

Registries come from ``--database-url`` (each already populated), or from
``--server-url`` with ``--sizes``: a database ``idnode_lt_<N>`` per size, populated
when missing (and kept for the next run).
"""

from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any

from .prewarm import prewarm_primary_key
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


def fit_power(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares of log y = log c + k·log x (y = c·x^k); returns (c, k, r²)."""
    a, k, r2 = fit_log([(x, math.log10(y)) for x, y in points])
    return 10**a, k, r2


def fit_cost(
    node: list[tuple[float, float]], ceiling: list[tuple[float, float]]
) -> dict[str, Any] | None:
    """Both models for microseconds per lookup against size, extrapolated to 1.5e9.

    Neither is physics: the cost steps up as the index outgrows PostgreSQL's buffers,
    then the page cache, then memory. The two fits bracket the extrapolation.
    """
    xs = [x for x, _ in node]
    if len(xs) < 2 or max(xs) < 2 * min(xs):
        return None  # sizes a factor of two apart at least, or a slope means nothing
    try:
        return _fit_cost(node, ceiling)
    except (OverflowError, ZeroDivisionError, ValueError):
        return None


def _fit_cost(
    node: list[tuple[float, float]], ceiling: list[tuple[float, float]]
) -> dict[str, Any]:
    a, b, r2_log = fit_log(node)
    c, k, r2_pow = fit_power(node)
    at_log = a + b * math.log10(TARGET)
    at_pow = c * TARGET**k
    out: dict[str, Any] = {
        "model": "us_per_lookup = a + b*log10(N), and us_per_lookup = c*N^k",
        "log": {"a": round(a, 3), "b": round(b, 3), "r2": round(r2_log, 3)},
        "power": {"c": round(c, 5), "k": round(k, 4), "r2": round(r2_pow, 3)},
        "us_per_lookup_at_1_5e9": {"log": round(at_log, 1), "power": round(at_pow, 1)},
    }
    cx = [x for x, _ in ceiling]
    if len(cx) >= 2 and max(cx) >= 2 * min(cx):
        cc, ck, cr2 = fit_power(ceiling)
        out["sql_ceiling_power"] = {"c": round(cc, 5), "k": round(ck, 4), "r2": round(cr2, 3)}
        out["sql_ceiling_us_per_key_at_1_5e9"] = round(cc * TARGET**ck, 1)
    lo, hi = sorted((at_log, at_pow))
    out["text"] = (
        f"µs of this machine per SQL-bound lookup (node and PostgreSQL together) = "
        f"{a:.1f} + {b:.1f}·log10(N) (r² {r2_log:.2f}), or {c:.3g}·N^{k:.3f} "
        f"(r² {r2_pow:.2f}). Extrapolated to 1.5e9 identifiers: {lo:.0f} to {hi:.0f} µs, "
        f"{1e6 / hi:,.0f} to {1e6 / max(lo, 1e-9):,.0f} lookups/s. Past memory, disk "
        "reads, not these fits, decide."
    )
    return out


def ensure_database(server_url: str, size: int, say: Progress) -> str:
    """``idnode_lt_<size>`` on the server, populated with identifiers 0..size-1."""
    import asyncio

    from idnode.registry.migrate import upgrade

    from .populate import bar, populate_postgres
    from .scratch_db import create_database

    name = f"idnode_lt_{size}"
    url = asyncio.run(create_database(server_url, name, if_missing=True))
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
    urls: list[str],
    cfg: RunConfig,
    say: Progress = lambda m: print(m, file=sys.stderr),
    prewarm: bool = True,
) -> dict[str, Any]:
    import asyncio

    points = []
    reports = []
    for url in urls:
        warm = (
            asyncio.run(prewarm_primary_key(url))
            if url.startswith("postgresql") and prewarm
            else {}
        )
        if warm:
            say(f"prewarmed {warm['prewarmed_index_bytes'] / 2**20:,.0f} MiB of index")
        c = dataclasses.replace(
            cfg,
            database_url=url,
            registry_size=0,
            l1_mb=0,
            redis_url="",
            distribution="uniform",
            miss_share=0.0,
            mix="C",
            mode="closed",
            ceilings=False,
            prewarm=False,  # the primary key alone, above: heap reads are what scale shows
        )
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
            | warm
        )
        say(f"  {size:,} identifiers: {node['per_s']:,} lookups/s, p50 {node['p50_us']} us")
    points.sort(key=lambda p: p["registry_size"])
    out: dict[str, Any] = {"points": points}
    out["fit"] = fit_cost(
        [(p["registry_size"], p["us_per_lookup"]) for p in points if p["us_per_lookup"]],
        [
            (p["registry_size"], 1e6 / p["ceiling_sql_batch_keys_per_s"])
            for p in points
            if p.get("ceiling_sql_batch_keys_per_s")
        ],
    )
    return {"runs": reports, "scale": out}
