"""The L2 tier on a Redis Cluster against a standalone Redis, in one run.

    python -m idnode.loadtest.l2_bench --keys 20000 --seconds 5

1. a standalone `redis-server` and a 3-master, 3-replica Redis Cluster
   (loadtest/redis_cluster.py), private, on loopback, pinned to the server core (0);
   this process (the client, as a node's worker is) pinned to the load core (1);
2. on each, through the node's own tier (``RedisTier`` and ``RedisClusterTier``):
   ``--seconds`` of fills of ``--keys`` identifiers of the key space (each at least
   once) in batches of ``--batch`` (the fill stage's batches), then ``--seconds`` of
   batched reads: ``--batch`` lookups at a time
   through the tier's coalescer (one MGET on one Redis; one MGET per slot, each master's
   in one pipelined round trip, on the cluster), as a node's misses arrive;
3. the cluster's keys/s as a ratio to the standalone Redis's.

The keys carry the handle as their hash tag, so a batch touches about as many slots as it
has keys: on a cluster, a batched read costs the client a command per key (a
pipeline instead of one MGET), which is most of the ratio. The report (JSON on stdout)
gives keys/s per side and the ratios; every read must hit (``hit_ratio`` 1.0).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any

from idnode.resolver.l2 import RedisClusterTier, RedisTier

from .keyspace import handle
from .processes import ProcessError, stop
from .redis_cluster import LocalCluster, standalone_redis


@dataclass
class L2BenchConfig:
    keys: int = 20_000  # identifiers filled, then read
    batch: int = 256  # keys per fill call and per burst of lookups (--batch-max's default)
    seconds: float = 5.0  # of fills, then of reads, per side
    server_cpus: tuple[int, ...] = (0,)
    load_cpus: tuple[int, ...] = (1,)


async def _measure(tier: RedisTier, keys: list[str], cfg: L2BenchConfig) -> dict[str, Any]:
    await tier.ping()
    batches = [keys[i : i + cfg.batch] for i in range(0, len(keys), cfg.batch)]
    values = [[(k, f"values of {k}".encode()) for k in b] for b in batches]
    fills = 0
    start = time.perf_counter()
    end = start + cfg.seconds
    while fills < len(keys) or time.perf_counter() < end:  # every key once, then on
        for v in values:
            await tier.put_many(v)
            fills += len(v)
            if fills >= len(keys) and time.perf_counter() >= end:
                break
    fill_s = time.perf_counter() - start
    reads = hits = 0
    start = time.perf_counter()
    end = start + cfg.seconds
    while time.perf_counter() < end:
        for b in batches:
            got = await asyncio.gather(*(tier.get(k) for k in b))
            reads += len(b)
            hits += sum(g is not None for g in got)
            if time.perf_counter() >= end:
                break
    read_s = time.perf_counter() - start
    errors = tier.errors
    await tier.clear()
    await tier.close()
    return {
        "fills_per_s": round(fills / fill_s),
        "reads_per_s": round(reads / read_s),
        "reads": reads,
        "hit_ratio": round(hits / reads, 4) if reads else 0.0,
        "errors": errors,
    }


def run(cfg: L2BenchConfig) -> dict[str, Any]:
    keys = [handle(i) for i in range(cfg.keys)]
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cfg.load_cpus) & set(range(os.cpu_count() or 1)) or own)
    url, proc, tmp = standalone_redis(cfg.server_cpus, "idnode-l2-bench-")
    try:
        tier = RedisTier(url, namespace="l2bench", max_batch=cfg.batch, timeout=2.0)
        standalone = asyncio.run(_measure(tier, keys, cfg))
    finally:
        stop(proc, 10)
        shutil.rmtree(tmp, ignore_errors=True)
    cluster = LocalCluster.start(cpus=cfg.server_cpus)
    try:
        on_cluster = RedisClusterTier(
            cluster.url, namespace="l2bench", max_batch=cfg.batch, timeout=2.0
        )
        clustered = asyncio.run(_measure(on_cluster, keys, cfg))
    finally:
        cluster.stop()
        os.sched_setaffinity(0, own)
    return {
        "config": asdict(cfg),
        "redis_version": redis_version(),
        "standalone": standalone,
        "cluster": clustered,
        "cluster_masters": 3,
        "ratio_reads": round(clustered["reads_per_s"] / standalone["reads_per_s"], 3),
        "ratio_fills": round(clustered["fills_per_s"] / standalone["fills_per_s"], 3),
    }


def redis_version() -> str:
    binary = shutil.which("redis-server") or "redis-server"
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def summary(report: dict[str, Any]) -> str:
    s, c = report["standalone"], report["cluster"]
    return (
        f"standalone redis: reads {s['reads_per_s']:,} keys/s, fills {s['fills_per_s']:,} keys/s; "
        f"cluster (3 masters + 3 replicas): reads {c['reads_per_s']:,} keys/s "
        f"(ratio {report['ratio_reads']}), fills {c['fills_per_s']:,} keys/s "
        f"(ratio {report['ratio_fills']}); batches of {report['config']['batch']}"
    )


def _cpus(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--keys", type=int, default=20_000, help="identifiers filled, then read")
    p.add_argument("--batch", type=int, default=256, help="keys per fill and per read burst")
    p.add_argument(
        "--seconds", type=float, default=5.0, help="seconds of fills, then of reads, per side"
    )
    p.add_argument("--server-cpus", default="0", help="the Redis servers' cores")
    p.add_argument("--load-cpus", default="1", help="this client's cores")
    args = p.parse_args(argv)
    cfg = L2BenchConfig(
        keys=args.keys,
        batch=args.batch,
        seconds=args.seconds,
        server_cpus=_cpus(args.server_cpus),
        load_cpus=_cpus(args.load_cpus),
    )
    try:
        report = run(cfg)
    except ProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
