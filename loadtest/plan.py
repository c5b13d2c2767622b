"""A capacity plan from measured figures: what a node needs for R registrations at Q qps.

Every assumption is printed with the plan. Defaults are figures measured on this
project's 2-core reference machine (see the issue notes); pass your own measurements
(``--bytes-per-identifier`` from ``idnode loadtest populate``, per-core rates from
``idnode loadtest run``) for your hardware.

Cache sizes follow from the popularity model instead of being guessed: under YCSB's
Zipfian (theta 0.99) the share of lookups that the k most popular of R identifiers take
is H(k)/H(R), with H the generalised harmonic number. So the L1 hit ratio follows from
how many entries fit in a worker's L1, and the Redis memory from how many identifiers
must be cached to answer ``cache_hit_ratio`` of lookups without SQL.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

# Measured here (2 cores; see the issue notes for the runs):
DEFAULT_HIT_QPS_PER_CORE = 100_000  # L1 hits, Handle UDP, 50k ids (loadtest run --prefill)
DEFAULT_MISS_QPS_PER_CORE = 44_000  # answered from Redis, L1 off (loadtest.udp_bench)
DEFAULT_BYTES_PER_IDENTIFIER = 336.5  # PostgreSQL table + TOAST + primary key, at 100M
DEFAULT_REDIS_BYTES_PER_KEY = 290  # MEMORY USAGE of a cached identifier (run reports it)
DEFAULT_L1_BYTES_PER_ENTRY = 374  # the L1's own accounting of a load-test entry
_HEAD = 100_000  # harmonic numbers summed exactly up to here, then Euler-Maclaurin


@functools.lru_cache(maxsize=8)
def _head(theta: float) -> tuple[float, ...]:
    out, acc = [0.0], 0.0
    for i in range(1, _HEAD + 1):
        acc += i**-theta
        out.append(acc)
    return tuple(out)


def harmonic(k: float, theta: float = 0.99) -> float:
    """H(k) = sum of i^-theta for i = 1..k (k may be up to 1e12 and more)."""
    head = _head(theta)
    if k <= _HEAD:
        return head[max(0, int(k))]
    s = 1 - theta
    tail = (k**s - _HEAD**s) / s + 0.5 * (k**-theta - _HEAD**-theta)
    return float(head[_HEAD] + tail)


def zipf_share(k: float, n: float, theta: float = 0.99) -> float:
    """Share of lookups the k most popular of n identifiers take."""
    return min(1.0, harmonic(min(k, n), theta) / harmonic(n, theta))


def zipf_hot_set(target: float, n: float, theta: float = 0.99) -> float:
    """Fewest most-popular identifiers that take ``target`` of the lookups."""
    if target >= 1:
        return n
    lo, hi = 0.0, n
    for _ in range(200):
        mid = (lo + hi) / 2
        if zipf_share(mid, n, theta) >= target:
            hi = mid
        else:
            lo = mid
    return math.ceil(hi)


@dataclass(frozen=True)
class Plan:
    registrations: float
    qps: float
    bytes_per_identifier: float = DEFAULT_BYTES_PER_IDENTIFIER
    cache_hit_ratio: float = 0.95  # share of lookups answered by L1 or Redis (not SQL)
    zipf_theta: float = 0.99
    l1_mb_per_worker: float = 64
    l1_bytes_per_entry: float = DEFAULT_L1_BYTES_PER_ENTRY
    hit_qps_per_core: float = DEFAULT_HIT_QPS_PER_CORE
    miss_qps_per_core: float = DEFAULT_MISS_QPS_PER_CORE
    redis_bytes_per_key: float = DEFAULT_REDIS_BYTES_PER_KEY
    headroom: float = 0.5  # spare capacity: peaks, failover, growth

    def compute(self) -> dict[str, Any]:
        r, theta = self.registrations, self.zipf_theta
        l1_entries = self.l1_mb_per_worker * 2**20 / self.l1_bytes_per_entry
        l1_hit = zipf_share(l1_entries, r, theta)
        cpu_seconds = (
            self.qps * l1_hit / self.hit_qps_per_core
            + self.qps * (1 - l1_hit) / self.miss_qps_per_core
        )
        cores = math.ceil(cpu_seconds * (1 + self.headroom))
        sql_bytes = r * self.bytes_per_identifier * (1 + self.headroom)
        hot = zipf_hot_set(self.cache_hit_ratio, r, theta)
        redis_bytes = hot * self.redis_bytes_per_key * (1 + self.headroom)
        return {
            "assumptions": asdict(self),
            "resolver_cores": cores,
            "l1_hit_ratio": round(l1_hit, 3),
            "l1_entries_per_worker": round(l1_entries),
            "sql_storage_gib": round(sql_bytes / 2**30, 1),
            "redis_hot_identifiers": hot,
            "redis_hot_share": round(hot / r, 4),
            "redis_memory_gib": round(redis_bytes / 2**30, 1),
            "lookups_past_l1_per_s": round(self.qps * (1 - l1_hit)),
            "lookups_reaching_sql_per_s": round(self.qps * (1 - self.cache_hit_ratio)),
            "note": "cores for resolution only (the Handle UDP path); PostgreSQL and Redis "
            "need their own hosts; hash-partition the handles table (idnode loadtest "
            "populate --partitions) and add read replicas when one PostgreSQL cannot serve "
            "the SQL rate",
        }


def render(result: dict[str, Any]) -> str:
    a = result["assumptions"]
    lines = [
        f"capacity plan for {a['registrations']:,.0f} registrations at {a['qps']:,.0f} lookups/s",
        f"  resolver cores:        {result['resolver_cores']}",
        f"  SQL storage:           {result['sql_storage_gib']} GiB",
        f"  Redis memory:          {result['redis_memory_gib']} GiB "
        f"({result['redis_hot_identifiers']:,} hottest identifiers, "
        f"{result['redis_hot_share']:.1%} of all, answer {a['cache_hit_ratio']:.0%} of lookups)",
        f"  L1 hit ratio:          {result['l1_hit_ratio']:.1%} "
        f"({result['l1_entries_per_worker']:,} entries in {a['l1_mb_per_worker']:g} MiB a worker)",
        f"  lookups past L1:       {result['lookups_past_l1_per_s']:,}/s",
        f"  lookups reaching SQL:  {result['lookups_reaching_sql_per_s']:,}/s",
        "assumptions:",
        f"  popularity: YCSB Zipfian, theta {a['zipf_theta']}",
        f"  {a['bytes_per_identifier']} bytes per identifier in SQL (table + index)",
        f"  {a['hit_qps_per_core']:,.0f} L1-hit and {a['miss_qps_per_core']:,.0f} miss "
        "lookups/s per core",
        f"  {a['redis_bytes_per_key']:g} bytes per identifier in Redis, "
        f"{a['l1_bytes_per_entry']:g} per L1 entry",
        f"  {a['headroom']:.0%} headroom on every figure",
        f"  {result['note']}",
    ]
    return "\n".join(lines)
