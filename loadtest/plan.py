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
# L1 hits, Handle UDP, uniform over 100k identifiers, one worker (idnode loadtest peer
# --doors udp,tcp --rounds 3): 2026-11-27, after batched UDP I/O, ready answers and CLOCK
# eviction in L1, medians of 81,712/s (73-87k; a noisy hour, the echo at 123k/s), 87,925
# and 89,956/s, and 110,781/s on a quieter morning. The node's core is the limit.
# 80,000 is below every median. (2026-11-26, before those: 48,349/s.)
DEFAULT_HIT_QPS_PER_CORE = 80_000
DEFAULT_MISS_QPS_PER_CORE = 44_000  # answered from Redis, L1 off (loadtest.udp_bench)
# Lookups that reach PostgreSQL cost the node more than Redis hits: the 10M-identifier
# miss path (Zipfian, no Redis, one worker; idnode loadtest run --doors udp --mode open
# --rates 10000,15000,20000,25000,30000 --warmup 5 --seconds 8, 2026-11-26) kept up to
# 25k/s offered with 65% L1 hits and fell behind at 30k. Taking 25k as the core's whole
# capacity, 16.3k hits at the hit rate above take 0.34 of it, leaving 0.66 for 8.7k SQL
# misses: about 13k per core. 10k is kept (the two runs were in different sessions, and
# these machines' speed moves by more than that). A saturation point, not a separate
# measurement.
DEFAULT_SQL_MISS_QPS_PER_CORE = 10_000
DEFAULT_BYTES_PER_IDENTIFIER = 336.5  # PostgreSQL table + TOAST + primary key, at 100M
DEFAULT_REDIS_BYTES_PER_KEY = 290  # MEMORY USAGE of a cached identifier (run reports it)
DEFAULT_L1_BYTES_PER_ENTRY = 374  # the L1's own accounting of a load-test entry
# PostgreSQL batched lookups one server (primary or replica) answers: the store's join on
# a hash-partitioned table, batches of 100 (registry/postgres_store.py: 79k keys/s here).
DEFAULT_SQL_KEYS_PER_SERVER = 79_000
# Cached-identifier reads a Redis Cluster answers per master in the node's per-master
# pipelines: python -m idnode.loadtest.l2_bench measured 23,222-25,786 keys/s for the
# whole 3-master cluster with all six servers on one core (standalone: 45,714-54,345 in
# the same runs). Taken as one master's rate: a floor, since here the masters share a core.
DEFAULT_REDIS_KEYS_PER_MASTER = 23_000
# The value index (--search-index), python -m idnode.loadtest.search_bench at 100k
# identifiers of the load test's keyspace (3 searchable values each: URL, TEMPLATE,
# productName): pg_total_relation_size(search_values) per identifier, and the batch
# write rate with the index as a share of the rate without it (same run, same machine).
# Writes (issue 17), idnode loadtest writes --count 100000 --seconds 10 --workers 1,
# PostgreSQL + Redis on this 2-core machine with nothing else running (2026-11-27, four
# runs): one worker answered 1,010-1,222 REST PUTs/s and 888-999 Handle MODIFY_VALUEs/s
# (authenticated sessions) beside a 4,270-5,037/s SQL ceiling of the same statements;
# the slower door's lowest, rounded down, is taken per node core. (The node itself was
# 0.6-0.7 of its core busy, at 0.52-0.78 ms of CPU per update: its core is shared with
# the PostgreSQL backends it wakes; the day before, 945 and 765/s.)
# Batch registration: python -m idnode.loadtest.batch_bench --parallel 1,2,4 (the
# service in one process, with the node's invalidation through Redis) registered 12,390
# ids/s from one upload, 15,101/s from two and 15,867/s from four, PostgreSQL overlapping
# the service (2026-11-27; the day before, 10,619 and 12,742). In two processes, one
# upload each, as on a 2-worker node (--processes 2 --parallel 1, 100,000 identifiers):
# 24,580 and 24,928/s on the machine's two cores, PostgreSQL and Redis included, so
# about 12,000 a core either way.
DEFAULT_WRITES_PER_CORE = 850
DEFAULT_BATCH_IDS_PER_CORE = 12_000
DEFAULT_SEARCH_INDEX_BYTES_PER_IDENTIFIER = 447.2
DEFAULT_SEARCH_INDEX_WRITE_RATIO = 0.45
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
    miss_qps_per_core: float = DEFAULT_MISS_QPS_PER_CORE  # past L1, answered by Redis
    sql_miss_qps_per_core: float = DEFAULT_SQL_MISS_QPS_PER_CORE  # past Redis too
    # Writes: single-identifier updates (REST PUT, Handle MODIFY_VALUE) and identifiers
    # registered in batches, per second, with the node cores each costs.
    writes: float = 0
    batch_ids: float = 0
    writes_per_core: float = DEFAULT_WRITES_PER_CORE
    batch_ids_per_core: float = DEFAULT_BATCH_IDS_PER_CORE
    redis_bytes_per_key: float = DEFAULT_REDIS_BYTES_PER_KEY
    headroom: float = 0.5  # spare capacity: peaks, failover, growth
    # The cluster's shape (operator's choices, then measured rates):
    cores_per_node: float = 8  # cores of one node's host (--workers = cores)
    min_nodes: float = 3  # losing one node must leave the others serving
    redis_master_gib: float = 16  # memory per Redis master (bigger: slower failover resync)
    redis_keys_per_master: float = DEFAULT_REDIS_KEYS_PER_MASTER
    partition_gib: float = 16  # size of one handles partition (VACUUM, index rebuilds)
    sql_keys_per_server: float = DEFAULT_SQL_KEYS_PER_SERVER
    # Reverse lookup by value (--search-index): its table beside handles, its write cost.
    search_index: bool = False
    search_index_bytes_per_identifier: float = DEFAULT_SEARCH_INDEX_BYTES_PER_IDENTIFIER
    search_index_write_ratio: float = DEFAULT_SEARCH_INDEX_WRITE_RATIO

    def compute(self) -> dict[str, Any]:
        r, theta = self.registrations, self.zipf_theta
        l1_entries = self.l1_mb_per_worker * 2**20 / self.l1_bytes_per_entry
        l1_hit = zipf_share(l1_entries, r, theta)
        # Past L1, Redis answers up to cache_hit_ratio of all lookups; the rest reach SQL,
        # at a node cost of their own (when L1 alone answers more, nothing reaches Redis).
        redis_share = max(0.0, self.cache_hit_ratio - l1_hit)
        sql_share = 1 - max(self.cache_hit_ratio, l1_hit)
        cpu_seconds = (
            self.qps * l1_hit / self.hit_qps_per_core
            + self.qps * redis_share / self.miss_qps_per_core
            + self.qps * sql_share / self.sql_miss_qps_per_core
        )
        write_seconds = self.writes / self.writes_per_core
        write_seconds += self.batch_ids / self.batch_ids_per_core
        cores = math.ceil((cpu_seconds + write_seconds) * (1 + self.headroom))
        write_cores = math.ceil(write_seconds * (1 + self.headroom))
        handles_bytes = r * self.bytes_per_identifier * (1 + self.headroom)
        search_bytes = (
            r * self.search_index_bytes_per_identifier * (1 + self.headroom)
            if self.search_index
            else 0.0
        )
        sql_bytes = handles_bytes + search_bytes
        hot = zipf_hot_set(self.cache_hit_ratio, r, theta)
        redis_bytes = hot * self.redis_bytes_per_key * (1 + self.headroom)
        past_l1 = self.qps * (1 - l1_hit)
        to_sql = self.qps * sql_share
        return {
            "assumptions": asdict(self),
            "cluster": self._cluster(cores, handles_bytes, redis_bytes, past_l1, to_sql),
            "resolver_cores": cores,
            "of_which_for_writes": write_cores,
            "l1_hit_ratio": round(l1_hit, 3),
            "l1_entries_per_worker": round(l1_entries),
            "sql_storage_gib": round(sql_bytes / 2**30, 1),
            "search_index_gib": round(search_bytes / 2**30, 1),
            "write_rate_factor": self.search_index_write_ratio if self.search_index else 1.0,
            "redis_hot_identifiers": hot,
            "redis_hot_share": round(hot / r, 4),
            "redis_memory_gib": round(redis_bytes / 2**30, 1),
            "lookups_past_l1_per_s": round(past_l1),
            "lookups_reaching_sql_per_s": round(to_sql),
            "note": "node cores for resolution (the Handle UDP path) and writes; PostgreSQL "
            "and Redis need their own hosts; the cluster shape says how to split them "
            "(Redis Cluster masters, handles partitions made by idnode init --partitions, "
            "read replicas given by --database-read-url)",
        }

    def _cluster(
        self, cores: int, sql_bytes: float, redis_bytes: float, past_l1: float, to_sql: float
    ) -> dict[str, Any]:
        """Nodes, Redis Cluster masters, PostgreSQL partitions and read replicas
        (``sql_bytes``: the handles table's, which the partitions divide)."""
        up = 1 + self.headroom
        nodes = max(math.ceil(self.min_nodes), math.ceil(cores / self.cores_per_node))
        masters = max(
            3,  # the smallest Redis Cluster that survives losing a master
            math.ceil(redis_bytes / (self.redis_master_gib * 2**30)),
            math.ceil(past_l1 * up / self.redis_keys_per_master),
        )
        # A power of two: hash partitions can later be split evenly (MODULUS doubling).
        parts = 2 ** max(
            1, math.ceil(math.log2(max(2.0, sql_bytes / (self.partition_gib * 2**30))))
        )
        # Replicas answer the lookups that reach SQL; the primary keeps writes and sessions.
        replicas = max(1, math.ceil(to_sql * up / self.sql_keys_per_server))
        return {
            "nodes": nodes,
            "workers_per_node": round(self.cores_per_node),
            "redis_masters": masters,
            "redis_replicas": masters,  # one per master, for failover
            "redis_gib_per_master": round(redis_bytes / masters / 2**30, 1),
            "postgres_partitions": parts,
            "postgres_gib_per_partition": round(sql_bytes / parts / 2**30, 1),
            "postgres_read_replicas": replicas,
        }


def render(result: dict[str, Any]) -> str:
    a, c = result["assumptions"], result["cluster"]
    lines = [
        f"capacity plan for {a['registrations']:,.0f} registrations at {a['qps']:,.0f} lookups/s",
        f"  node cores:            {result['resolver_cores']}"
        + (
            f" (of which {result['of_which_for_writes']} for {a['writes']:,.0f} updates/s "
            f"and {a['batch_ids']:,.0f} batch registrations/s)"
            if a["writes"] or a["batch_ids"]
            else ""
        ),
        f"  SQL storage:           {result['sql_storage_gib']} GiB"
        + (
            f" (of which the value index, --search-index: {result['search_index_gib']} GiB)"
            if a["search_index"]
            else ""
        ),
        f"  Redis memory:          {result['redis_memory_gib']} GiB "
        f"({result['redis_hot_identifiers']:,} hottest identifiers, "
        f"{result['redis_hot_share']:.1%} of all, answer {a['cache_hit_ratio']:.0%} of lookups)",
        f"  L1 hit ratio:          {result['l1_hit_ratio']:.1%} "
        f"({result['l1_entries_per_worker']:,} entries in {a['l1_mb_per_worker']:g} MiB a worker)",
        f"  lookups past L1:       {result['lookups_past_l1_per_s']:,}/s",
        f"  lookups reaching SQL:  {result['lookups_reaching_sql_per_s']:,}/s",
        "cluster shape:",
        f"  idnode nodes:          {c['nodes']} (--workers {c['workers_per_node']} each)",
        f"  Redis Cluster:         {c['redis_masters']} masters + {c['redis_replicas']} "
        f"replicas, {c['redis_gib_per_master']} GiB per master",
        f"  PostgreSQL:            a primary with {c['postgres_read_replicas']} read "
        f"replica(s) (--database-read-url); handles in {c['postgres_partitions']} hash "
        f"partitions of {c['postgres_gib_per_partition']} GiB (idnode init --partitions)",
        "assumptions:",
        f"  popularity: YCSB Zipfian, theta {a['zipf_theta']}",
        f"  {a['bytes_per_identifier']} bytes per identifier in SQL (table + index)",
        f"  {a['hit_qps_per_core']:,.0f} L1-hit, {a['miss_qps_per_core']:,.0f} Redis-hit "
        f"and {a['sql_miss_qps_per_core']:,.0f} SQL lookups/s per core",
        f"  {a['writes_per_core']:,.0f} single updates/s and {a['batch_ids_per_core']:,.0f} "
        "batch registrations/s per core (idnode loadtest writes, loadtest.batch_bench)",
        f"  {a['redis_bytes_per_key']:g} bytes per identifier in Redis, "
        f"{a['l1_bytes_per_entry']:g} per L1 entry",
        f"  {a['headroom']:.0%} headroom on every figure",
        *(
            [
                f"  value index: {a['search_index_bytes_per_identifier']:g} bytes per "
                f"identifier; batch writes at {a['search_index_write_ratio']:.0%} of the rate "
                "without it (python -m idnode.loadtest.search_bench)"
            ]
            if a["search_index"]
            else []
        ),
        f"  nodes of {a['cores_per_node']:g} cores, at least {a['min_nodes']:g}; Redis masters "
        f"of {a['redis_master_gib']:g} GiB serving {a['redis_keys_per_master']:,.0f} keys/s; "
        f"partitions of {a['partition_gib']:g} GiB; {a['sql_keys_per_server']:,.0f} "
        "batched SQL lookups/s per PostgreSQL server",
        f"  {result['note']}",
    ]
    return "\n".join(lines)
