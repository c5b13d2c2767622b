"""A capacity plan from measured figures: what a node needs for R registrations at Q qps.

Every assumption is printed with the plan. Defaults are figures measured on this
project's 2-core reference machine (see the issue notes); pass your own measurements
(``--bytes-per-identifier`` from ``idnode loadtest populate``, per-core rates from
``python -m loadtest.udp_bench``) for your hardware.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

# Measured here: loadtest.udp_bench (one worker, one core) and loadtest.populate.
DEFAULT_HIT_QPS_PER_CORE = 125_000  # L1 hits, Handle UDP
DEFAULT_MISS_QPS_PER_CORE = 44_000  # answered from Redis or PostgreSQL
DEFAULT_VALUE_BYTES = 190  # an identifier's value list in Redis (3 values, as in the load test)


@dataclass(frozen=True)
class Plan:
    registrations: float
    qps: float
    bytes_per_identifier: float
    hot_fraction: float = 0.01  # share of identifiers that take most lookups
    l1_hit_ratio: float = 0.9  # share of lookups answered from a worker's L1
    hit_qps_per_core: float = DEFAULT_HIT_QPS_PER_CORE
    miss_qps_per_core: float = DEFAULT_MISS_QPS_PER_CORE
    value_bytes: float = DEFAULT_VALUE_BYTES
    headroom: float = 0.5  # spare capacity: peaks, failover, growth
    redis_overhead: float = 90.0  # bytes per Redis key beyond key and value (measured order)

    def compute(self) -> dict[str, Any]:
        cpu_seconds = (
            self.qps * self.l1_hit_ratio / self.hit_qps_per_core
            + self.qps * (1 - self.l1_hit_ratio) / self.miss_qps_per_core
        )
        cores = math.ceil(cpu_seconds * (1 + self.headroom))
        sql_bytes = self.registrations * self.bytes_per_identifier * (1 + self.headroom)
        hot = self.registrations * self.hot_fraction
        redis_bytes = hot * (self.value_bytes + 40 + self.redis_overhead) * (1 + self.headroom)
        miss_qps = self.qps * (1 - self.l1_hit_ratio)
        return {
            "assumptions": asdict(self),
            "resolver_cores": cores,
            "sql_storage_gib": round(sql_bytes / 2**30, 1),
            "redis_memory_gib": round(redis_bytes / 2**30, 1),
            "lookups_reaching_redis_or_sql_per_s": round(miss_qps),
            "note": "cores for resolution only (the Handle UDP path); PostgreSQL and Redis "
            "need their own hosts; hash-partition the handles table and add read "
            "replicas when one PostgreSQL cannot serve the miss rate",
        }


def render(result: dict[str, Any]) -> str:
    a = result["assumptions"]
    lines = [
        f"capacity plan for {a['registrations']:,.0f} registrations at {a['qps']:,.0f} lookups/s",
        f"  resolver cores:        {result['resolver_cores']}",
        f"  SQL storage:           {result['sql_storage_gib']} GiB",
        f"  Redis memory:          {result['redis_memory_gib']} GiB "
        f"(hot set {a['hot_fraction']:.1%} of identifiers)",
        f"  misses to Redis/SQL:   {result['lookups_reaching_redis_or_sql_per_s']:,}/s",
        "assumptions:",
        f"  {a['bytes_per_identifier']} bytes per identifier in SQL (table + indexes)",
        f"  {a['hit_qps_per_core']:,.0f} L1-hit and {a['miss_qps_per_core']:,.0f} miss "
        f"lookups/s per core; L1 hit ratio {a['l1_hit_ratio']:.0%}",
        f"  {a['value_bytes']} bytes per value list in Redis, +{a['redis_overhead']} per key",
        f"  {a['headroom']:.0%} headroom on every figure",
        f"  {result['note']}",
    ]
    return "\n".join(lines)
