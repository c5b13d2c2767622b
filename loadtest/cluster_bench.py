"""`idnode loadtest cluster`: the issue-15 topology (loadtest/topology.py) under load.

    idnode loadtest cluster --handles 20000 --seconds 5

1. the topology: a six-node Redis Cluster, a PostgreSQL primary + streaming replica and
   three `idnode serve` nodes from docker/cluster.env (one worker each by default), the
   nodes and the engines pinned to ``--server-cpus``, the generators to ``--load-cpus``;
   ``--handles`` identifiers of the key space loaded on the primary (COPY), replayed on
   the replica, then resolved once through each node (gRPC BatchResolve: Redis and
   every L1 full);
2. the UDP echo (loadtest/ceilings.py) on the server cores: the ceiling of the run;
3. the same generators (closed loop, Handle over UDP) all at node 1, then spread over
   the three nodes: each as a ratio to the echo, and three over one (on one host the
   nodes share its cores: the ratio says what the split costs, not what more hosts give);
4. per-slot batching: a node with L1 off (every lookup reaches the L2) on the cluster,
   then one on a standalone Redis, same load: the cluster's ratio to standalone is what
   one command per slot instead of one MGET costs a node;
5. the replica: reads with a share of misses (they reach the registry) and REST writes
   through all three nodes, once with the replica replaying and once with its replay
   paused: keys read per target (``idnode_registry_reads_total``), the largest lag the
   nodes report, and probes (a write on one node read at once on the others over UDP)
   that count any answer older than the acknowledged write.

Tier hit ratios are the nodes' /metrics deltas over each point, warm-up included.
Loopback only; bounded: each point is ``--warmup`` + ``--seconds``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from .generators import Job
from .processes import stop
from .redis_cluster import standalone_redis
from .run import Target, prefill, run_point, start_ceiling, tier_report
from .topology import Topology, TopologyNode

Progress = Callable[[str], None]


@dataclass
class ClusterBenchConfig:
    handles: int = 20_000  # identifiers loaded and drawn from
    seconds: float = 5.0  # measured, per point
    warmup: float = 1.0
    generators: int = 3  # the same processes for one node and for three
    window: int = 32  # requests in flight per generator
    miss_share: float = 0.1  # replica points: lookups of unregistered ids (reach SQL)
    workers: int = 1  # per node
    partitions: int = 0  # idnode init --partitions
    probes: int = 20  # write-then-read probes per replica point
    draws: int = 0  # identifiers each generator draws (0: enough never to reuse them)
    server_cpus: list[int] = field(default_factory=lambda: [0])
    load_cpus: list[int] = field(default_factory=lambda: [1])


def _target(n: TopologyNode) -> Target:
    return Target("127.0.0.1", n.handle_port, n.http_port, n.grpc_port)


def _jobs(
    cfg: ClusterBenchConfig,
    ports: list[int],
    miss_share: float = 0.0,
    api_key: str = "",
    update_port: int = 0,
) -> list[Job]:
    jobs = [
        Job(
            door="udp",
            host="127.0.0.1",
            port=ports[k % len(ports)],
            mode="closed",
            seconds=cfg.seconds,
            warmup=cfg.warmup,
            window=cfg.window,
            registry_size=cfg.handles,
            distribution="zipfian",
            miss_share=miss_share,
            seed=1 + k,
            draws=cfg.draws,
            cpu=cfg.load_cpus[k % len(cfg.load_cpus)],
        )
        for k in range(cfg.generators)
    ]
    if api_key:
        jobs.append(
            Job(
                door="update",
                host="127.0.0.1",
                port=update_port,
                mode="closed",
                seconds=cfg.seconds,
                warmup=cfg.warmup,
                window=1,
                registry_size=cfg.handles,
                distribution="uniform",
                seed=1000,
                api_key=api_key,
                cpu=cfg.load_cpus[-1],
            )
        )
    return jobs


def _scrape(nodes: list[TopologyNode]) -> dict[str, dict[tuple[str, str], float]]:
    """Per metric family of interest, summed over the nodes: cache lookups by (tier,
    result), registry reads by target, and the replica gauges (their maximum)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, dict[tuple[str, str], float]] = {"cache": {}, "reads": {}, "lag": {}}
    for n in nodes:
        for fam in text_string_to_metric_families(n.metrics()):
            for s in fam.samples:
                if fam.name == "idnode_cache_lookups" and s.name.endswith("_total"):
                    k = (s.labels["tier"], s.labels["result"])
                    out["cache"][k] = out["cache"].get(k, 0.0) + s.value
                elif fam.name == "idnode_registry_reads" and s.name.endswith("_total"):
                    k = (s.labels["target"], "")
                    out["reads"][k] = out["reads"].get(k, 0.0) + s.value
                elif fam.name in ("idnode_replica_lag_bytes", "idnode_replica_lag_seconds"):
                    k = (fam.name.removeprefix("idnode_replica_"), "")
                    out["lag"][k] = max(out["lag"].get(k, 0.0), s.value)
                elif fam.name == "idnode_replica_usable":
                    k = ("usable_min", "")
                    out["lag"][k] = min(out["lag"].get(k, 1.0), s.value)
    return out


def _point(nodes: list[TopologyNode], jobs: list[Job], sample_lag: bool = False) -> dict[str, Any]:
    """One load point; the generators' merged figures and the nodes' metric deltas."""
    before = _scrape(nodes)
    peaks: dict[str, float] = {}
    done = threading.Event()

    def sampler() -> None:  # the lag gauges move during the point: keep their peaks
        while not done.wait(0.5):
            try:
                for (name, _), v in _scrape(nodes)["lag"].items():
                    peaks[name] = (
                        min(peaks.get(name, 1.0), v)
                        if name == "usable_min"
                        else (max(peaks.get(name, 0.0), v))
                    )
            except OSError:
                pass

    thread = threading.Thread(target=sampler, daemon=True)
    if sample_lag:
        thread.start()
    try:
        got = run_point(jobs, None)
    finally:
        done.set()
        if sample_lag:
            thread.join()
    time.sleep(1.25)  # each worker flushes its counts once a second (resolver/node.py)
    after = _scrape(nodes)
    out: dict[str, Any] = {
        "reads": got["reads"],
        "tiers": tier_report(before["cache"], after["cache"]),
    }
    if "updates" in got:
        out["updates"] = got["updates"]
    if sample_lag:
        out["registry_reads"] = {
            t: int(after["reads"].get((t, ""), 0) - before["reads"].get((t, ""), 0))
            for (t, _) in after["reads"]
        }
        out["replica_peaks"] = peaks
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _probes(t: Topology, api_key: str, count: int) -> dict[str, int]:
    """A REST write on one node (index 2001 of a loaded identifier), then a UDP read of it
    on each other node at once: how many reads showed an older value."""
    import urllib.request

    from idnode.resolver.client import exchange_udp, resolution_request

    from .keyspace import handle

    stale = reads = acked = 0
    for k in range(count):
        writer = t.nodes[k % len(t.nodes)]
        h = handle(k)
        value = f"probe {k} {time.monotonic_ns()}"
        # As the update generator writes: replace index 2001 only (generators.py).
        body = json.dumps(
            [{"index": 2001, "type": "productName", "data": {"format": "string", "value": value}}]
        ).encode()
        req = urllib.request.Request(
            f"{writer.http}/api/handles/{h}?index=2001",
            data=body,
            method="PUT",
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                if not 200 <= r.status < 300:
                    continue
        except OSError:
            continue
        acked += 1
        for other in t.nodes:
            if other is writer:
                continue
            m = exchange_udp("127.0.0.1", other.handle_port, resolution_request(h), timeout=5)
            reads += 1
            got = [v.data.decode() for v in getattr(m.body, "values", ()) if v.index == 2001]
            stale += got != [value]
    return {"writes_acknowledged": acked, "reads": reads, "stale_reads": stale}


def run(cfg: ClusterBenchConfig, say: Progress) -> dict[str, Any]:
    from .populate import populate_postgres
    from .run import make_api_key

    report: dict[str, Any] = {
        "harness": "idnode loadtest cluster",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "config": asdict(cfg),
    }
    say(f"starting the topology (3 nodes, {cfg.workers} worker each) on CPU {cfg.server_cpus}")
    t0 = time.perf_counter()
    with Topology.start(
        3,
        partitions=cfg.partitions,
        overrides={"IDNODE_WORKERS": str(cfg.workers), "IDNODE_LOG_LEVEL": "warning"},
        server_cpus=cfg.server_cpus,
        engine_cpus=cfg.server_cpus,
    ) as t:
        assert t.pg is not None
        report["topology_start_s"] = round(time.perf_counter() - t0, 1)
        say(f"loading {cfg.handles:,} identifiers on the primary")
        asyncio.run(populate_postgres(t.database_url, 0, cfg.handles))
        api_key = asyncio.run(make_api_key(t.database_url))
        t.pg.wait_replayed()
        for n in t.nodes:  # Redis full, and each node's L1: a steady state, not a cold one
            asyncio.run(prefill(_target(n), cfg.handles))
        report["prefilled_s"] = round(time.perf_counter() - t0, 1)
        nodes = t.nodes

        say("udp echo (the ceiling)")
        proc, port = start_ceiling("udp", cfg.server_cpus)
        try:
            echo = run_point(_jobs(cfg, [port]), None)["reads"]
        finally:
            stop(proc)
        report["ceiling"] = echo
        say("udp: every generator at node 1")
        one = _point(nodes, _jobs(cfg, [nodes[0].handle_port]))
        say("udp: generators spread over nodes 1, 2, 3")
        three = _point(nodes, _jobs(cfg, [n.handle_port for n in nodes]))
        for row in (one, three):
            row["ratio_to_ceiling"] = _ratio(row["reads"]["per_s"], echo["per_s"])
        report["one_node"], report["three_nodes"] = one, three
        report["three_over_one"] = _ratio(three["reads"]["per_s"], one["reads"]["per_s"])

        say("per-slot batching: L1 off, on the cluster, then on a standalone Redis")
        report["l2_path"] = _l2_points(t, cfg)

        say("replica replaying: reads with misses and REST writes over the three nodes")
        ports = [n.handle_port for n in nodes]
        replaying = _point(
            nodes, _jobs(cfg, ports, cfg.miss_share, api_key, nodes[1].http_port), sample_lag=True
        )
        replaying["probes"] = _probes(t, api_key, cfg.probes)
        say("replica paused (pg_wal_replay_pause): the same load")
        t.pg.pause_replay()
        try:
            paused = _point(
                nodes,
                _jobs(cfg, ports, cfg.miss_share, api_key, nodes[1].http_port),
                sample_lag=True,
            )
            paused["probes"] = _probes(t, api_key, cfg.probes)
        finally:
            t.pg.resume_replay()
        t.pg.wait_replayed()
        report["replica"] = {"replaying": replaying, "paused": paused}
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return report


def _l2_points(t: Topology, cfg: ClusterBenchConfig) -> dict[str, Any]:
    """Two extra nodes with L1 off, one on the cluster, one on a standalone Redis (each
    started, prefilled through itself, measured alone, stopped)."""
    out: dict[str, Any] = {}
    url, proc, tmp = standalone_redis(cfg.server_cpus, "idnode-cluster-bench-redis-")
    shared = t.env
    try:
        for name, extra in (
            ("cluster", {}),
            ("standalone", {"IDNODE_REDIS_URL": url, "IDNODE_REDIS_CLUSTER": "false"}),
        ):
            t.env = shared | {"IDNODE_L1_MAX_MB": "0"} | extra
            node = t.add_node(cpus=cfg.server_cpus)
            try:
                asyncio.run(prefill(_target(node), cfg.handles))
                row = _point([node], _jobs(cfg, [node.handle_port]))
            finally:
                node.stop(10)
                t.nodes.remove(node)
            out[name] = row
    finally:
        t.env = shared
        stop(proc, 10)
        shutil.rmtree(tmp, ignore_errors=True)
    out["cluster_over_standalone"] = _ratio(
        out["cluster"]["reads"]["per_s"], out["standalone"]["reads"]["per_s"]
    )
    return out


def summary(r: dict[str, Any]) -> str:
    one, three, l2, rep = r["one_node"], r["three_nodes"], r["l2_path"], r["replica"]

    def line(name: str, row: dict[str, Any]) -> str:
        tiers = row["tiers"]
        return (
            f"{name}: {row['reads']['per_s']:,}/s = {row.get('ratio_to_ceiling')} of the echo; "
            f"L1 hit {tiers['l1_hit_ratio']}, L2 hit {tiers['l2_hit_ratio']}"
        )

    out = [
        f"udp echo: {r['ceiling']['per_s']:,}/s",
        line("one node", one),
        line("three nodes", three),
        f"three over one: {r['three_over_one']}",
        f"L1 off, L2 on the cluster: {l2['cluster']['reads']['per_s']:,}/s; on a standalone "
        f"Redis: {l2['standalone']['reads']['per_s']:,}/s; ratio {l2['cluster_over_standalone']}",
    ]
    for name in ("replaying", "paused"):
        row = rep[name]
        out.append(
            f"replica {name}: {row['reads']['per_s']:,} reads/s, "
            f"{row.get('updates', {}).get('per_s', 0):,} writes/s; registry reads "
            f"{row['registry_reads']}; peaks {row['replica_peaks']}; probes {row['probes']}"
        )
    return "\n".join(out)
