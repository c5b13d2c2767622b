"""`idnode loadtest run`: drive a node through its front doors and report each figure
beside the ceiling of the same door measured in the same run.

For every door and every load point (an offered rate in open loop, a window in closed
loop) the run measures, with the same generator processes and the same identifiers:

1. the door's ceiling: a server speaking the same protocol with nothing behind it
   (``loadtest.ceilings``), pinned to the server cores;
2. the node: `idnode serve` pinned to the server cores (or a node you already run,
   ``--attach``), reading its /metrics before and after to get each cache tier's hits.

Reads go through the door; with a YCSB A or B mix, updates go as REST PUTs from an
extra generator at the mix's share. Results go to a folder as report.json and a
report.html with charts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import multiprocessing as mp
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from . import host_stats
from .ceilings import DESCRIPTIONS
from .generators import DOORS, Job, merge, process_main
from .keyspace import NODE_PREFIX
from .processes import (
    NodeProcess,
    Process,
    clear_namespace,
    free_port,
    pinned,
    stop,
    wait_port,
    wait_udp,
)
from .workloads import YCSB_MIXES

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

Progress = Callable[[str], None]


@dataclass
class RunConfig:
    doors: list[str] = field(default_factory=lambda: ["udp"])
    mode: str = "closed"  # closed | open
    rates: list[float] = field(default_factory=lambda: [20_000.0])  # open loop, total
    windows: list[int] = field(default_factory=lambda: [64])  # closed loop, per generator
    seconds: float = 5.0
    warmup: float = 1.0
    generators: int = 1
    distribution: str = "zipfian"
    miss_share: float = 0.0
    mix: str = "C"
    batch: int = 100
    registry_size: int = 0  # 0: count the registry (or populate the embedded one)
    database_url: str = ""  # empty: a throwaway SQLite registry of --registry-size
    redis_url: str = ""
    l1_mb: int = 64
    server_cpus: list[int] = field(default_factory=lambda: [0])
    load_cpus: list[int] = field(default_factory=lambda: [1])
    attach: str = ""  # HOST:HANDLE_PORT:HTTP_PORT:GRPC_PORT of a running node
    ceilings: bool = True
    prefill: bool = False  # resolve every identifier once before measuring each door
    prewarm: bool = True  # read the registry into the OS page cache first (prewarm.py)
    results: str = ""
    label: str = ""

    def check(self) -> None:
        for d in self.doors:
            if d == "dns":
                # The DNS door is driven by dnsperf (loadtest/dns_bench.py), not by the
                # Handle generators: a DNS load generator in Python would be the limit.
                from .dns_bench import INSTALL, dnsperf_path

                if dnsperf_path() is None:
                    raise ValueError(f"--doors dns drives dnsperf: {INSTALL}")
                continue
            if d not in DOORS:
                raise ValueError(f"unknown door {d!r}; choose from {', '.join(DOORS)}, dns")
        if self.mode not in ("open", "closed"):
            raise ValueError("mode is open or closed")
        if self.mix not in YCSB_MIXES:
            raise ValueError(f"unknown YCSB mix {self.mix!r} (A, B or C)")
        if self.mode == "open" and not all(r > 0 for r in self.rates):
            raise ValueError("open loop needs positive --rates")
        if self.mode == "closed" and not all(w > 0 for w in self.windows):
            raise ValueError("closed loop needs positive --windows")
        if not 0 <= self.miss_share <= 1:
            raise ValueError("--miss-share is a fraction between 0 and 1")
        if self.generators < 1 or self.seconds <= 0:
            raise ValueError("--generators and --seconds must be positive")
        if self.attach and not self.database_url:
            # The attached node has its own registry: nothing here to populate (a 10M
            # throwaway SQLite took minutes, and its writeback slowed the node measured).
            if self.registry_size <= 0:
                raise ValueError(
                    "--attach without --database-url needs --registry-size: the identifiers "
                    "0..N-1 the attached node's registry holds"
                )
            if YCSB_MIXES[self.mix] or "dns" in self.doors:
                raise ValueError(
                    "--attach with updates (--mix A or B) or --doors dns needs --database-url: "
                    "the attached node's registry, for the API key and the DNS door's node"
                )


# --- the node and the ceiling servers ----------------------------------------------------


@dataclass
class Target:
    host: str
    handle_port: int
    http_port: int
    grpc_port: int
    node: NodeProcess | None = None  # None: a node someone else runs (--attach)
    namespace: str = ""

    def port_for(self, door: str) -> int:
        if door in ("udp", "tcp"):
            return self.handle_port
        if door in ("http", "rest", "page", "redirect", "update"):
            return self.http_port
        return self.grpc_port

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()


PREFILL_L1_TTL = 86_400  # s: with --prefill, the node keeps what was prefilled


def start_node(cfg: RunConfig, database_url: str, log: Path) -> Target:
    namespace = f"idnode-lt-{secrets.token_hex(3)}" if cfg.redis_url else ""
    node = NodeProcess(
        database_url,
        redis_url=cfg.redis_url,
        namespace=namespace,
        workers=len(cfg.server_cpus),
        extra=(
            "--l1-max-mb",
            str(cfg.l1_mb),
            "--log-level",
            "warning",
            # Prefilled entries must outlive the run: with the default 60 s L1 lifetime
            # they expired while the points ran, and a uniform 100k load measured
            # 50% L1 hits instead of 100%.
            *(("--l1-ttl", str(PREFILL_L1_TTL)) if cfg.prefill else ()),
        ),
        log=log,
        cpus=cfg.server_cpus,
    )
    target = Target("127.0.0.1", node.handle_port, node.http_port, node.grpc_port, node, namespace)
    try:
        node.wait_ready(timeout=60)
    except BaseException:
        node.stop()
        raise
    return target


def start_ceiling(door: str, cpus: list[int]) -> tuple[Process, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idnode.loadtest.ceilings", "--door", door, "--port", str(port)],
        preexec_fn=pinned(cpus),
    )
    try:
        if door == "udp":
            wait_udp(port, b"ping", proc=proc)
        else:
            wait_port(port, proc=proc)
    except BaseException:
        stop(proc)
        raise
    return proc, port


# --- metrics ---------------------------------------------------------------------------

METRICS_FLUSH_SECONDS = 1.0  # how often a worker flushes its counts (resolver/node.py)


def scrape(http_port: int, host: str = "127.0.0.1") -> dict[tuple[str, str], float]:
    """Cache lookups by (tier, result) from the node's /metrics."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{host}:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name == "idnode_cache_lookups":
            for s in fam.samples:
                if s.name.endswith("_total"):
                    key = (s.labels["tier"], s.labels["result"])
                    out[key] = out.get(key, 0.0) + s.value
    return out


def tier_report(
    before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]
) -> dict[str, Any]:
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in set(before) | set(after)}
    out: dict[str, Any] = {"lookups": {f"{t}_{r}": int(v) for (t, r), v in sorted(d.items())}}
    for tier in ("l1", "l2", "l3"):
        hit, miss = d.get((tier, "hit"), 0.0), d.get((tier, "miss"), 0.0)
        out[f"{tier}_hit_ratio"] = round(hit / (hit + miss), 4) if hit + miss else None
    return out


# --- one load point ---------------------------------------------------------------------


SEEDS_PER_POINT = 1000  # generators of one point draw seeds base+0.., its updates base+999


def _jobs(
    cfg: RunConfig,
    door: str,
    target: Target,
    point: float,
    ceiling: bool,
    api_key: str,
    size: int,
    index: int = 0,
) -> list[Job]:
    """The generators of the ``index``-th point. Each point draws its own key sequences:
    replaying the previous point's (one seed for all) made the first seconds of every
    point L1 hits of keys the last point had fetched, and its last seconds a burst of
    cold misses, a tail that belonged to the harness, not to the node."""
    update_share = 0.0 if ceiling else YCSB_MIXES[cfg.mix]
    jobs = []
    g = cfg.generators
    base = 1 + SEEDS_PER_POINT * index
    for k in range(g):
        jobs.append(
            Job(
                door=door,
                host=target.host,
                port=target.port_for(door),
                mode=cfg.mode,
                seconds=cfg.seconds,
                warmup=cfg.warmup,
                rate=point * (1 - update_share) / g if cfg.mode == "open" else 0.0,
                window=int(point) if cfg.mode == "closed" else 0,
                batch=cfg.batch,
                registry_size=size,
                distribution=cfg.distribution,
                miss_share=cfg.miss_share,
                seed=base + k,
                cpu=cfg.load_cpus[k % len(cfg.load_cpus)],
            )
        )
    if update_share:
        jobs.append(
            Job(
                door="update",
                host=target.host,
                port=target.port_for("update"),
                mode=cfg.mode,
                seconds=cfg.seconds,
                warmup=cfg.warmup,
                rate=point * update_share if cfg.mode == "open" else 0.0,
                window=max(1, math.ceil(point * g * update_share / (1 - update_share)))
                if cfg.mode == "closed"
                else 0,
                registry_size=size,
                distribution=cfg.distribution,
                seed=base + SEEDS_PER_POINT - 1,
                api_key=api_key,
                cpu=cfg.load_cpus[g % len(cfg.load_cpus)],
            )
        )
    return jobs


def run_point(jobs: list[Job], metrics_port: int | None, host: str = "127.0.0.1") -> dict[str, Any]:
    """Run generator processes together; merge their results by door."""
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(jobs) + 1, timeout=900)
    queue = ctx.Queue()
    procs = [ctx.Process(target=process_main, args=(j, barrier, queue)) for j in jobs]
    for p in procs:
        p.start()
    before: dict[tuple[str, str], float] = {}
    try:
        barrier.wait()  # all prepared: warm-up starts
        barrier.wait()  # warm-up over: measuring starts
        machine = host_stats.read()
        if metrics_port is not None:
            before = scrape(metrics_port, host)
        results = [queue.get(timeout=900) for _ in jobs]
        # the generators finish together, at the end of the measured seconds
        machine_during = host_stats.between(machine, host_stats.read())
    except Exception as exc:
        errors = []
        while not queue.empty():
            errors.append(queue.get_nowait()[1].get("error", ""))
        raise RuntimeError(
            f"a generator failed: {'; '.join(e for e in errors if e) or exc}"
        ) from exc
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    failed = [r.get("error") for _, r in results if "error" in r]
    if failed:
        raise RuntimeError(f"a generator failed: {failed[0]}")
    by_seed = dict(results)
    out: dict[str, Any] = {}
    reads = [by_seed[j.seed] for j in jobs if j.door != "update"]
    if reads:  # updates alone (loadtest/write_bench.py) have no reads to merge
        out["reads"] = merge(reads) | {"host": machine_during}
    updates = [by_seed[j.seed] for j in jobs if j.door == "update"]
    if updates:
        out["updates"] = merge(updates)
    if metrics_port is not None:
        # Each worker flushes its counts into /metrics once a second, and a scrape
        # flushes only the worker that answers it: wait out one flush so the counts
        # of every worker are in (without it the last second of another worker's
        # lookups went missing and the tier totals fell short of the answers).
        time.sleep(METRICS_FLUSH_SECONDS + 0.25)
        out["tiers"] = tier_report(before, scrape(metrics_port, host))
    return out


# --- the run -----------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def prepare_registry(cfg: RunConfig, tmp: Path, say: Progress) -> tuple[str, int, dict[str, Any]]:
    """The registry URL, its size, and facts about it (backend, bytes per identifier)."""
    from idnode.registry.migrate import upgrade

    from .populate import populate_sqlite

    if cfg.attach and not cfg.database_url:  # check(): --registry-size is given
        return "", cfg.registry_size, {"backend": "the attached node's"}
    if not cfg.database_url:
        size = cfg.registry_size or 100_000
        url = f"sqlite:///{tmp}/registry.db"
        upgrade(url)
        say(f"populating a throwaway SQLite registry with {size:,} identifiers")
        rep = populate_sqlite(str(tmp / "registry.db"), 0, size)
        return (
            url,
            size,
            {
                "backend": "sqlite",
                "identifiers": size,
                "bytes_per_identifier": rep["bytes_per_identifier"],
            },
        )
    url = cfg.database_url
    upgrade(url)
    facts = asyncio.run(registry_facts(url))
    size = cfg.registry_size or facts["identifiers"]
    if size <= 0:
        raise ValueError(
            f"{url} holds no identifiers: run idnode loadtest populate --count N first"
        )
    return url, size, facts


async def registry_facts(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        import sqlite3

        path = url.split("///", 1)[1]
        db = sqlite3.connect(path)
        try:
            (n,) = db.execute("SELECT count(*) FROM handles WHERE prefix <> '0.NA'").fetchone()
        finally:
            db.close()
        size = os.path.getsize(path)
        return {
            "backend": "sqlite",
            "identifiers": int(n),
            "bytes_per_identifier": round(size / n, 1) if n else None,
        }
    import asyncpg

    from .populate import handles_footprint

    c = await asyncpg.connect(url)
    try:
        # counting a 100M-row table reads all of it: past a million rows, the planner's
        # estimate (exact after populate's ANALYZE) is good enough
        size, _, n = await handles_footprint(c)
        estimated = n >= 1_000_000
        if not estimated:
            n = int(await c.fetchval("SELECT count(*) FROM handles WHERE prefix <> '0.NA'"))
    finally:
        await c.close()
    return {
        "backend": "postgresql",
        "identifiers": n,
        "identifiers_estimated": estimated,  # pg_class.reltuples, exact after ANALYZE
        "bytes_per_identifier": round(size / n, 1) if n else None,
    }


# The industry template the load test's identifiers name (TEMPLATE "tpl-v1" at 1001);
# published on the node prefix, so every enterprise prefix below inherits it.
LOADTEST_TEMPLATE = {
    "prefix": NODE_PREFIX,
    "version": "tpl-v1",
    "industry": "C/34/344/3443",  # GB/T 4754: valve and cock manufacturing
    "description": "load test: hydraulic valves",
    "items": [
        {
            "key": "productName",
            "index": 2001,
            "name": "产品名称",
            "required": True,
            "max_length": 128,
        }
    ],
}


async def make_api_key(url: str) -> str:
    """For updates: an admin of the load-test prefix, an API key acting as it, and the
    template the identifiers name (without it every update is refused, as it should be)."""
    key, _ = await make_admin_access(url)
    return key


async def make_admin_access(url: str) -> tuple[str, RSAPrivateKey]:
    """What make_api_key makes, with the private key of the admin's HS_PUBKEY kept: the
    API key, and the key that authenticates ``0.NA/<NODE_PREFIX>`` at index 300 over the
    Handle protocol (AdminClient(..., private_key=...), loadtest/write_bench.py)."""
    import hashlib

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from idnode.registry.bootstrap import KEY_INDEX, create_prefix_admin
    from idnode.registry.names import NA_PREFIX
    from idnode.registry.store import open_store
    from idnode.registry.templates import parse_template

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    store = open_store(url)
    await store.open()
    try:
        await create_prefix_admin(store, NODE_PREFIX, pubkey_pem=pem)
        doc = parse_template(LOADTEST_TEMPLATE)
        await store.put_template(NODE_PREFIX, doc.version, doc.to_json(), "loadtest")
        key = "idn_" + secrets.token_urlsafe(32)
        await store.add_api_key(
            hashlib.sha256(key.encode()).hexdigest(), NA_PREFIX + NODE_PREFIX, KEY_INDEX, "loadtest"
        )
    finally:
        await store.close()
    return key, private


def tier_ceilings(cfg: RunConfig, url: str, target: Target, size: int) -> dict[str, Any]:
    """Redis MGET and the store's SQL key batch (asyncpg), batches of 100, from a load
    core, with identifiers drawn as the run drew them.

    No identifier is asked twice: cycling through a short list would keep its pages in
    PostgreSQL's buffers and measure a ceiling no uniform load over a large registry
    ever sees.
    """
    from .udp_bench import any_ceiling, mget_ceiling
    from .workloads import Workload

    os.sched_setaffinity(0, {cfg.load_cpus[0]})
    secs = min(cfg.seconds, 3.0)
    w = Workload(size, cfg.distribution, 0.0, "C", seed=5)
    keys = [w.next()[1].upper() for _ in range(int(secs * 250_000))]
    out: dict[str, Any] = {"keys_drawn": len(keys), "distribution": cfg.distribution}
    if cfg.redis_url and target.namespace:
        out["redis_mget_100_keys_per_s"] = round(
            asyncio.run(
                mget_ceiling(cfg.redis_url, [f"{target.namespace}:h:{k}" for k in keys], secs)
            )
        )
        out["redis_cache"] = redis_footprint(cfg.redis_url, target.namespace)
    if url.startswith("postgresql"):
        out["postgres_batch_100_keys_per_s"] = round(asyncio.run(any_ceiling(url, keys, secs)))
    return out


def redis_footprint(url: str, namespace: str, sample: int = 1000) -> dict[str, Any]:
    """What a cached identifier costs in Redis (MEMORY USAGE of a sample of the node's
    keys): the figure `idnode loadtest plan --redis-bytes-per-key` wants."""
    import redis

    r = redis.Redis.from_url(url)
    try:
        keys = []
        for k in r.scan_iter(match=f"{namespace}:h:*", count=1000):
            keys.append(k)
            if len(keys) >= sample:
                break
        sizes = [cast(int, r.memory_usage(k)) or 0 for k in keys]
    finally:
        r.close()
    return {
        "sampled_keys": len(sizes),
        "bytes_per_key": round(sum(sizes) / len(sizes)) if sizes else None,
    }


def run(cfg: RunConfig, say: Progress = lambda m: print(m, file=sys.stderr)) -> dict[str, Any]:
    cfg.check()
    tmp = Path(tempfile.mkdtemp(prefix="idnode-loadtest-"))
    started = dt.datetime.now(dt.UTC)
    url, size, facts = prepare_registry(cfg, tmp, say)
    if url and cfg.prewarm:
        from .prewarm import prewarm

        facts["prewarm"] = prewarm(url, say)
    else:
        facts["prewarm"] = {
            "done": False,
            "why": "--no-prewarm" if url else "the attached node's registry is not reachable here",
        }
    api_key = asyncio.run(make_api_key(url)) if YCSB_MIXES[cfg.mix] else ""
    log = tmp / "node.log"
    points = cfg.rates if cfg.mode == "open" else [float(w) for w in cfg.windows]
    report: dict[str, Any] = {
        "harness": "idnode loadtest run",
        "label": cfg.label,
        "started": started.isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "config": {k: v for k, v in asdict(cfg).items() if k != "attach"}
        | {"attached": bool(cfg.attach)},
        "registry": facts | {"identifiers_in_key_space": size},
        "doors": {},
    }
    for n, door in enumerate(cfg.doors):
        # Each door gets a node started afresh (empty L1, its own Redis namespace), so
        # no door inherits the caches an earlier one warmed; within a door the points
        # run in order on the same node, as load rises on a real one.
        if door == "dns":
            report["doors"][door] = measure_dns(cfg, url, size, say)
            continue
        if cfg.attach:
            host, hp, wp, gp = cfg.attach.rsplit(":", 3)
            target = Target(host, int(hp), int(wp), int(gp))
        else:
            say(
                f"{door}: starting idnode serve on CPU {cfg.server_cpus} "
                f"({facts['backend']}, {size:,} identifiers)"
            )
            target = start_node(cfg, url, log)
        try:
            if cfg.prefill:
                t0 = time.perf_counter()
                asyncio.run(prefill(target, size))
                say(f"{door}: prefilled {size:,} identifiers in {time.perf_counter() - t0:.1f} s")
            report["doors"][door] = measure_door(cfg, door, points, target, api_key, size, say)
            if n == len(cfg.doors) - 1 and not cfg.attach:
                report["tier_ceilings"] = tier_ceilings(cfg, url, target, size)
        finally:
            target.stop()
            if cfg.redis_url and target.namespace:
                clear_namespace(cfg.redis_url, target.namespace)
        if not cfg.attach and door in report["doors"]:
            # what the node said while measured (stalls, lost channels, replicas skipped),
            # with its times, to line up with the points' per-second series
            report["doors"][door]["node_log"] = node_log_lines(log)
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return report


NODE_LOG_LINES = 200  # the last lines kept in the report; a flood is the node's log's job


def node_log_lines(log: Path) -> list[str]:
    """The node's log lines at warning or above (it runs at --log-level warning), the
    last NODE_LOG_LINES, stack lines included."""
    if not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    return lines[-NODE_LOG_LINES:]


async def prefill(target: Target, size: int, batch: int = 1000, concurrency: int = 4) -> None:
    """Resolve identifiers 0..size-1 once through gRPC BatchResolve, so L1 and Redis
    hold what they can before the clock starts (a node in steady state, not a cold one)."""
    import grpc

    from idnode.resolver.grpc_protos import load

    from .keyspace import handle

    pb2, pb2_grpc = load()
    async with grpc.aio.insecure_channel(f"{target.host}:{target.grpc_port}") as channel:
        stub = pb2_grpc.ResolverStub(channel)
        starts = iter(range(0, size, batch))

        async def lane() -> None:
            for s0 in starts:
                reqs = [
                    pb2.ResolveRequest(handle=handle(i)) for i in range(s0, min(size, s0 + batch))
                ]
                await stub.BatchResolve(pb2.BatchResolveRequest(requests=reqs), timeout=60)

        await asyncio.gather(*(lane() for _ in range(concurrency)))


def measure_door(
    cfg: RunConfig,
    door: str,
    points: list[float],
    target: Target,
    api_key: str,
    size: int,
    say: Progress,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "ceiling": DESCRIPTIONS[door],
        "unit": "identifiers/s" if door == "grpc-batch" else "requests/s",
        "points": [],
    }
    for index, point in enumerate(points):
        row: dict[str, Any] = (
            {"offered_per_s": point} if cfg.mode == "open" else {"window": int(point)}
        )
        if cfg.ceilings:
            say(f"{door}: ceiling at {_label(cfg, point)}")
            proc, port = start_ceiling(door, cfg.server_cpus)
            try:
                ct = Target("127.0.0.1", port, port, port)
                row["ceiling"] = run_point(
                    _jobs(cfg, door, ct, point, True, "", size, index), None
                )["reads"]
            finally:
                stop(proc)
        say(f"{door}: node at {_label(cfg, point)}")
        got = run_point(
            _jobs(cfg, door, target, point, False, api_key, size, index),
            target.http_port,
            target.host,
        )
        row["node"] = got["reads"] | {"tiers": got.get("tiers")}
        if "updates" in got:
            row["updates"] = got["updates"]
        if "ceiling" in row:
            row["node"]["ratio_to_ceiling"] = _ratio(row["node"]["per_s"], row["ceiling"]["per_s"])
        entry["points"].append(row)
        say(_summary(door, row))
    return entry


def measure_dns(cfg: RunConfig, url: str, size: int, say: Progress) -> dict[str, Any]:
    """The DNS door: dnsperf against hot names on one worker, then against a bare uvloop
    UDP echo (loadtest/dns_bench.py); one point, the run's --seconds, cores and window
    (dnsperf's queries in flight)."""
    from .dns_bench import DnsBenchConfig, summary
    from .dns_bench import run as dns_run

    bench = DnsBenchConfig(
        handles=min(size, 1000),
        seconds=cfg.seconds,
        outstanding=max(cfg.windows) if cfg.mode == "closed" else 200,
        server_cpus=tuple(cfg.server_cpus[:1]),  # one worker, one core
        load_cpus=tuple(cfg.load_cpus),
        database_url=url,
        echo=cfg.ceilings,
    )
    say(f"dns: dnsperf against {bench.handles:,} hot names on CPU {list(bench.server_cpus)}")
    got = dns_run(bench)
    say("  " + summary(got))
    return {
        "ceiling": DESCRIPTIONS["dns"],
        "unit": "queries/s",
        "dnsperf": got,
        "points": [],  # the Handle generators' points; dnsperf's figures are above
    }


def _label(cfg: RunConfig, point: float) -> str:
    return (
        f"{point:,.0f}/s offered"
        if cfg.mode == "open"
        else f"window {point:.0f} x {cfg.generators}"
    )


def _summary(door: str, row: dict[str, Any]) -> str:
    n = row["node"]
    ratio = n.get("ratio_to_ceiling")
    tiers = n.get("tiers") or {}
    hit = tiers.get("l1_hit_ratio")
    return (
        f"  {door}: {n['per_s']:,}/s p50 {n['p50_us']} us p99 {n['p99_us']} us"
        + (f" = {ratio} of ceiling" if ratio is not None else "")
        + (f"; L1 hit {hit:.1%}" if hit is not None else "")
        + (f"; codes {n['codes']}" if n["codes"] else "")
        + _worst_second(n.get("per_second") or [])
        + host_stats.summary(n.get("host"))
        + ("; the generator was saturated (a floor)" if n.get("generator_saturated") else "")
        + (
            "; the ceiling is the generator's own limit"
            if row.get("ceiling", {}).get("generator_saturated")
            else ""
        )
    )


def _worst_second(series: list[dict[str, Any]]) -> str:
    """Where the slow answers were: one bad second (a stall) reads differently from a
    tail spread over the run (a queue), though both give the same p99."""
    slow = [s for s in series if s["over_5ms"]]
    if not slow:
        return ""
    worst = max(slow, key=lambda s: s["max_ms"])
    return (
        f"; over 5 ms in {len(slow)} of {len(series)} s, worst second {worst['second']}"
        f" (max {worst['max_ms']} ms, {worst['over_5ms']} of {worst['answered']} over 5 ms)"
    )


def save(report: dict[str, Any], folder: str | None) -> Path:
    """report.json and report.html in ``folder`` (default results/<time>)."""
    import json

    from .report_page import render

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    path = Path(folder or f"results/{stamp}")
    path.mkdir(parents=True, exist_ok=True)
    (path / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False))
    (path / "report.html").write_text(render(report))
    return path
