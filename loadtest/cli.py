"""``idnode loadtest``: the one way the product's command line reaches the harness.

``idnode loadtest ...`` hands its arguments to ``main`` here (imported only then), so the
node's other commands never load the harness. Flags map onto the harness's objects
(RunConfig, Plan); what the commands do lives in the harness's modules.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idnode.errors import IdnodeError
from idnode.registry.admin_tasks import missing_database, upgrade_schema
from idnode.resolver.settings import add_setting_flags, settings_from_args

from .plan import Plan, render

if TYPE_CHECKING:
    from .run import RunConfig

EXIT_OK = 0
EXIT_USAGE = 2  # the command cannot run as given
EXIT_FAIL = 3  # the work itself failed (a node or generator died, an overlapping slice)
OVERLAP = (
    "the slice overlaps identifiers already loaded (use --start past them); chunks before "
    "the failing one stay"
)


def _cpus(text: str) -> list[int]:
    """ "0", "0,2", "2-5" → CPU numbers."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def run_config(args: argparse.Namespace) -> RunConfig:
    from .run import RunConfig

    return RunConfig(
        doors=[d for d in args.doors.split(",") if d],
        mode=args.mode,
        rates=[float(r) for r in args.rates.split(",") if r],
        windows=[int(w) for w in args.windows.split(",") if w],
        seconds=args.seconds,
        warmup=args.warmup,
        generators=args.generators,
        distribution=args.distribution,
        miss_share=args.miss_share,
        mix=args.mix,
        batch=args.batch,
        registry_size=int(float(args.registry_size)),
        database_url=args.database_url or "",
        redis_url=args.redis_url or "",
        l1_mb=args.l1_mb,
        server_cpus=_cpus(args.server_cpus),
        load_cpus=_cpus(args.load_cpus),
        attach=args.attach or "",
        ceilings=not args.no_ceilings,
        prefill=args.prefill,
        prewarm=not args.no_prewarm,
        results=args.results or "",
        label=args.label,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from .run import run, save

    try:
        cfg = run_config(args)
        report = run(cfg)
    except (ValueError, RuntimeError) as exc:
        print(f"idnode loadtest run: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    folder = save(report, cfg.results or None)
    for door, d in report["doors"].items():
        if d.get("node_log"):
            print(f"{door}: the node logged {len(d['node_log'])} lines (node_log in report.json)")
    print(f"report: {folder / 'report.html'} and {folder / 'report.json'}")
    return EXIT_OK


def cmd_scale(args: argparse.Namespace) -> int:
    from .run import save
    from .scale import ensure_database, scale

    try:
        cfg = run_config(args)
        urls = list(args.database_url_list or [])
        if args.sizes:
            if not args.server_url:
                raise ValueError("--sizes needs --server-url (where databases may be created)")
            say = lambda m: print(m, file=sys.stderr)  # noqa: E731
            urls += [
                ensure_database(args.server_url, int(float(n)), say)
                for n in args.sizes.split(",")
                if n
            ]
        if not urls:
            raise ValueError("give --database-url (repeatable) or --server-url with --sizes")
        result = scale(urls, cfg, prewarm=not args.no_prewarm)
    except (ValueError, RuntimeError) as exc:
        print(f"idnode loadtest scale: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    report = result["runs"][-1] | {"scale": result["scale"], "doors": {}}
    report["label"] = cfg.label or "scale"
    folder = save(report | {"scale_runs": result["runs"]}, cfg.results or None)
    fit = result["scale"].get("fit")
    if fit:
        print(fit["text"])
    print(f"report: {folder / 'report.html'} and {folder / 'report.json'}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from .report_page import render as render_page

    try:
        report = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as exc:
        print(f"idnode loadtest report: cannot read {args.report}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.html or Path(args.report).with_suffix(".html"))
    out.write_text(render_page(report))
    print(out)
    return EXIT_OK


def cmd_plan(args: argparse.Namespace) -> int:
    plan = Plan(**{f.name: getattr(args, f.name) for f in fields(Plan)}).compute()
    print(json.dumps(plan, indent=2) if args.json else render(plan))
    return EXIT_OK


def cmd_populate(args: argparse.Namespace) -> int:
    import asyncpg

    from .populate import bar, populate_postgres, populate_sqlite

    def fail(message: str, code: int = EXIT_USAGE) -> int:
        print(f"idnode loadtest populate: {message}", file=sys.stderr)
        return code

    try:
        url = settings_from_args(args).database_url
        upgrade_schema(url)
    except IdnodeError as exc:  # a bad URL, a database that is not there or cannot be set up
        return fail(str(exc))
    progress = bar("populate", args.count)
    try:
        if url.startswith("sqlite:///"):
            report = populate_sqlite(
                url[len("sqlite:///") :],
                args.start,
                args.count,
                chunk=args.chunk,
                progress=progress,
            )
        else:
            report = asyncio.run(
                populate_postgres(
                    url,
                    args.start,
                    args.count,
                    chunk=args.chunk,
                    parallel=args.parallel,
                    partitions=args.partitions,
                    progress=progress,
                )
            )
    except ValueError as exc:
        return fail(str(exc))
    except sqlite3.IntegrityError:
        return fail(OVERLAP, EXIT_FAIL)
    except asyncpg.UniqueViolationError as exc:
        return fail(f"{exc.detail or exc}: {OVERLAP}", EXIT_FAIL)
    except (OSError, asyncpg.PostgresError) as exc:
        return fail(str(missing_database(url, exc) or exc))
    print(json.dumps(report, indent=2))
    return EXIT_OK


def cmd_cluster(args: argparse.Namespace) -> int:
    from .cluster_bench import ClusterBenchConfig, summary
    from .cluster_bench import run as cluster_run

    cfg = ClusterBenchConfig(
        handles=args.handles,
        seconds=args.seconds,
        warmup=args.warmup,
        generators=args.generators,
        window=args.window,
        miss_share=args.miss_share,
        workers=args.workers,
        partitions=args.partitions,
        probes=args.probes,
        draws=args.draws,
        server_cpus=_cpus(args.server_cpus),
        load_cpus=_cpus(args.load_cpus),
    )
    try:
        report = cluster_run(cfg, lambda m: print(m, file=sys.stderr))
    except RuntimeError as exc:  # a server that did not start, a generator that failed
        print(f"idnode loadtest cluster: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(summary(report), file=sys.stderr)
    text = json.dumps(report, indent=2)
    if args.results:
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(text)
        print(f"report: {args.results}")
    else:
        print(text)
    return EXIT_OK


def cmd_peer(args: argparse.Namespace) -> int:
    from .peer import PeerConfig, summary
    from .peer import run as peer_run

    cfg = PeerConfig(
        reference_jars=args.reference_jars,
        handles=args.handles,
        seconds=args.seconds,
        warmup=args.warmup,
        jit_warmup=args.jit_warmup,
        doors=[d for d in args.doors.split(",") if d],
        window=args.window,
        server_cpu=args.server_cpu,
        load_cpu=args.load_cpu,
        sample=args.sample,
        draws=args.draws,
        rounds=args.rounds,
    )
    return _report("peer", lambda: peer_run(cfg), summary, args.results)


def cmd_native(args: argparse.Namespace) -> int:
    from .native import NativeConfig, summary
    from .native import run as native_run

    cfg = NativeConfig(
        doors=[d for d in args.doors.split(",") if d],
        handles=args.handles,
        seconds=args.seconds,
        warmup=args.warmup,
        connections=args.connections,
        grpc_connections=args.grpc_connections,
        streams=args.streams,
        server_cpu=args.server_cpu,
        load_cpu=args.load_cpu,
        sample=args.sample,
    )
    return _report("native", lambda: native_run(cfg), summary, args.results)


def cmd_writes(args: argparse.Namespace) -> int:
    from .write_bench import WriteBenchConfig, summary
    from .write_bench import run as writes_run

    def work() -> dict[str, Any]:
        cfg = WriteBenchConfig(
            count=args.count,
            seconds=args.seconds,
            warmup=args.warmup,
            window=args.window,
            workers=[int(w) for w in args.workers.split(",") if w],
            database_url=args.database_url or "",
            redis_url=args.redis_url or "",
            server_cpus=_cpus(args.server_cpus),
            load_cpus=_cpus(args.load_cpus),
            ceiling_pool=args.ceiling_pool,
        )
        return writes_run(cfg)

    return _report("writes", work, summary, args.json)


def _report(
    name: str,
    work: Any,
    summarise: Any,
    results: str | None,
) -> int:
    """Run ``work``; its summary on stderr, its JSON report on stdout or to ``results``."""
    try:
        report = work()
    except (ValueError, RuntimeError) as exc:
        print(f"idnode loadtest {name}: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    print(summarise(report), file=sys.stderr)
    text = json.dumps(report, indent=2, ensure_ascii=False)
    if results:
        Path(results).parent.mkdir(parents=True, exist_ok=True)
        Path(results).write_text(text)
        print(f"report: {results}")
    else:
        print(text)
    return EXIT_OK


def add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--doors",
        default="udp",
        help="comma-separated: udp, tcp, http (Handle over HTTP), rest, page (the "
        "resolution page, ?noredirect), redirect (its 302), grpc, grpc-batch, grpc-stream, "
        "dns (driven by dnsperf, when installed)",
    )
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument(
        "--rates", default="20000", help="open loop: offered requests/s, comma-separated points"
    )
    p.add_argument(
        "--windows", default="64", help="closed loop: requests in flight per generator, points"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per point")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per point (not measured)")
    p.add_argument("--generators", type=int, default=1, help="generator processes")
    p.add_argument("--distribution", choices=("zipfian", "uniform", "hotset"), default="zipfian")
    p.add_argument(
        "--miss-share", type=float, default=0.0, help="share of lookups for unregistered ids"
    )
    p.add_argument(
        "--mix", choices=("A", "B", "C"), default="C", help="YCSB: A 50%% updates, B 5%%, C reads"
    )
    p.add_argument("--batch", type=int, default=100, help="grpc-batch: identifiers per call")
    p.add_argument(
        "--registry-size",
        default="0",
        help="identifiers 0..N-1 to draw from (0: count the registry; 100000 for the "
        "throwaway one; required with --attach and no --database-url)",
    )
    p.add_argument("--redis-url", help="give the node this Redis (L2); default: none")
    p.add_argument("--l1-mb", type=int, default=64, help="the node's L1 per worker (0: off)")
    p.add_argument("--server-cpus", default="0", help="CPUs for the node (one worker each)")
    p.add_argument("--load-cpus", default="1", help="CPUs the generators are spread over")
    p.add_argument(
        "--attach",
        metavar="HOST:HANDLE:HTTP:GRPC",
        help="drive a running node instead of starting one (its ports); without "
        "--database-url, give --registry-size (nothing is populated here)",
    )
    p.add_argument("--no-ceilings", action="store_true", help="skip the ceiling servers")
    p.add_argument(
        "--prefill",
        action="store_true",
        help="resolve every identifier once (gRPC BatchResolve) before measuring each door, "
        "so L1 and Redis start full (steady state) instead of cold; the node then keeps "
        "L1 entries a day (--l1-ttl 86400) so the prefill lasts the run",
    )
    p.add_argument(
        "--no-prewarm",
        action="store_true",
        help="measure the registry as the OS page cache holds it. By default `run` reads "
        "the registry (table and indexes) into the cache first, with pg_prewarm for "
        "PostgreSQL when it fits in half the memory available, so the first lookups "
        "measure the node, not the disk; `scale` reads only the primary key. Each point "
        "reports the steal time, iowait and disk reads seen while it ran",
    )
    p.add_argument("--results", help="folder for report.json and report.html")
    p.add_argument("--label", default="", help="a title for the report")


DESCRIPTION = (
    "The load-test harness. `populate` bulk-loads identifiers 0..N-1 of the "
    "deterministic key space (PostgreSQL binary COPY, or batched SQLite inserts) and "
    "reports rows/s and bytes per identifier. `plan` prints the hardware a node needs "
    "for a number of registrations and a lookup rate, with its assumptions. `run` drives a "
    "node through its front doors, beside each door's ceiling; `scale` measures the cost "
    "of a lookup at several registry sizes; `peer` sets idnode beside the reference server "
    "on the hot path; `native` drives the HTTP, REST, page and gRPC doors with wrk and h2load; "
    "`writes` measures updates (REST PUT, Handle MODIFY_VALUE) beside their SQL ceiling."
)


def build_parser(prog: str = "idnode loadtest") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    lsub = parser.add_subparsers(dest="action", metavar="ACTION")
    lsub.required = True
    lp = lsub.add_parser("populate", help="bulk-load a slice of the key space")
    lp.add_argument("--count", type=int, required=True, help="identifiers to load")
    lp.add_argument("--start", type=int, default=0, help="first index (to load in slices)")
    lp.add_argument("--chunk", type=int, default=50_000, help="rows per COPY / transaction")
    lp.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="COPY streams into PostgreSQL (default 2: one per core here)",
    )
    lp.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="PostgreSQL: first make the (empty) handles table hash-partitioned into this "
        "many partitions (for registries of hundreds of millions and more)",
    )
    add_setting_flags(lp, ("database_url",))
    lp.set_defaults(func=cmd_populate)
    lr = lsub.add_parser(
        "run",
        help="drive a node through its front doors; report beside each door's ceiling",
        description="Start idnode serve (or --attach to one), drive it through each door in "
        "--doors with generator processes, open loop at --rates or closed loop at --windows, "
        "and measure each door's ceiling (the same protocol with nothing behind it) in the "
        "same run. Writes report.json and report.html (charts) to --results "
        "(default results/<time>). Servers listen on loopback; load goes to loopback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_flags(lr)
    lr.add_argument(
        "--database-url",
        help="a populated registry (idnode loadtest populate); default: a throwaway SQLite "
        "registry of --registry-size identifiers (none with --attach)",
    )
    lr.set_defaults(func=cmd_run)
    ls = lsub.add_parser(
        "scale",
        help="the same lookups at several registry sizes, and a fit of the cost",
        description="Lookups that all reach SQL (L1 and Redis off, uniform over the key space, "
        "closed loop) against registries of several sizes, then a least-squares fit of "
        "microseconds per lookup against log10(size), extrapolated to 1.5e9. Sizes come from "
        "--database-url (repeat it) or --server-url with --sizes (databases idnode_lt_<N>, "
        "populated when missing and kept).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_run_flags(ls)
    ls.add_argument(
        "--database-url", dest="database_url_list", action="append", help="a populated registry"
    )
    ls.add_argument("--server-url", help="a PostgreSQL server URL where databases may be created")
    ls.add_argument("--sizes", help="registry sizes, e.g. 1e6,1e7,1e8")
    ls.set_defaults(func=cmd_scale, database_url=None)
    lc = lsub.add_parser(
        "cluster",
        help="issue 15's topology on loopback: one node vs three, L2 per-slot cost, replica lag",
        description="Start the topology of docker/compose.cluster.yaml as processes on "
        "loopback (six-node Redis Cluster, PostgreSQL primary + streaming replica, three "
        "nodes configured from docker/cluster.env), load --handles identifiers, and drive "
        "Handle UDP lookups at one node, then over three, each as a ratio to a UDP echo "
        "measured in the same run; then a node with L1 off on the cluster vs on a standalone "
        "Redis (per-slot batching); then reads and REST writes with the replica replaying "
        "and paused (reads by target, lag, stale answers of write-then-read probes). JSON "
        "report on stdout or to --results; a summary on stderr.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    lc.add_argument("--handles", type=int, default=20_000, help="identifiers loaded")
    lc.add_argument("--seconds", type=float, default=5.0, help="measuring time per point")
    lc.add_argument("--warmup", type=float, default=1.0, help="warm-up per point")
    lc.add_argument("--generators", type=int, default=3, help="generator processes")
    lc.add_argument("--window", type=int, default=32, help="requests in flight per generator")
    lc.add_argument(
        "--miss-share", type=float, default=0.1, help="replica points: unregistered lookups"
    )
    lc.add_argument("--workers", type=int, default=1, help="workers per node")
    lc.add_argument("--partitions", type=int, default=0, help="idnode init --partitions")
    lc.add_argument("--probes", type=int, default=20, help="write-then-read probes per point")
    lc.add_argument(
        "--draws", type=int, default=0, help="identifiers per generator (0: never reused)"
    )
    lc.add_argument("--server-cpus", default="0", help="CPUs for the nodes and the engines")
    lc.add_argument("--load-cpus", default="1", help="CPUs the generators are spread over")
    lc.add_argument("--results", help="write the JSON report to this file")
    lc.set_defaults(func=cmd_cluster)
    le = lsub.add_parser(
        "peer",
        help="idnode beside the reference server (HANDLE.NET) and an echo, hot UDP/TCP path",
        description="Inside one loopback-only network namespace, start the echo ceiling, "
        "idnode serve (1 worker, SQLite, L1 warmed) and the reference server (its storage "
        "seeded with the same identifiers, JIT warmed), all pinned to --server-cpu, and "
        "drive one at a time with the same closed-loop generator on --load-cpu, uniform "
        "over --handles identifiers, in --rounds interleaved rounds; check a sample of "
        "answers from both; report every round's answers/s, the median per server, and "
        "the ratios idnode/reference, idnode/echo and reference/echo computed within each "
        "round, with their median, min and max. Needs root, java and the jars.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    le.add_argument(
        "--reference-jars",
        required=True,
        help="the HANDLE.NET 7.3.1 jars (handle.jar and its dependencies; a "
        "cnri-server-template folder beside it gives the server its key pair)",
    )
    le.add_argument("--handles", type=int, default=100_000, help="identifiers in both servers")
    le.add_argument(
        "--seconds", type=float, default=10.0, help="measuring time per server and round"
    )
    le.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds per door, each measuring the echo, idnode and the reference server "
        "one after another (the order rotated each round); the ratios are taken within a "
        "round and their median reported, because on a shared, noisy machine servers "
        "measured once each, a minute apart, give ratios that move with the other load",
    )
    le.add_argument("--warmup", type=float, default=2.0, help="warm-up before each measurement")
    le.add_argument(
        "--jit-warmup", type=float, default=15.0, help="unreported load on the reference first"
    )
    le.add_argument(
        "--doors",
        default="udp,tcp,tcp1",
        help="udp; tcp: one persistent connection, pipelined (the reference server closes "
        "it after one answer, so only idnode and the echo); tcp1: a connection per request",
    )
    le.add_argument("--window", type=int, default=256, help="requests in flight")
    le.add_argument("--server-cpu", type=int, default=0)
    le.add_argument("--load-cpu", type=int, default=1)
    le.add_argument("--sample", type=int, default=200, help="identifiers checked on both")
    le.add_argument(
        "--draws", type=int, default=0, help="identifiers drawn per generator (0: never reused)"
    )
    le.add_argument("--results", help="write the JSON report to this file")
    le.set_defaults(func=cmd_peer)
    ln = lsub.add_parser(
        "native",
        help="the HTTP, REST, page and gRPC doors driven by wrk and h2load, beside ceilings",
        description="Drive idnode serve (1 worker, SQLite, L1 warmed) with native "
        "generators: wrk with a Lua script drawing identifiers uniformly for the REST GET "
        "(rest), the resolution page (page, ?noredirect) and the Handle-over-HTTP tunnel "
        "(tunnel), h2load for gRPC unary Resolve (grpc). Each door is measured beside its "
        "ceiling (a bare aiohttp app or grpc.aio server with a fixed answer) with the same "
        "tool in the same run; a sample of answers is checked with a real client. Needs "
        "wrk and h2load (apt-get install wrk nghttp2-client).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ln.add_argument("--doors", default="rest,page,tunnel,grpc")
    ln.add_argument("--handles", type=int, default=100_000, help="identifiers in the registry")
    ln.add_argument("--seconds", type=float, default=10.0, help="measuring time per point")
    ln.add_argument("--warmup", type=float, default=2.0, help="warm-up before each point")
    ln.add_argument("--connections", type=int, default=64, help="wrk: connections")
    ln.add_argument("--grpc-connections", type=int, default=4, help="h2load: connections")
    ln.add_argument("--streams", type=int, default=32, help="h2load: streams per connection")
    ln.add_argument("--server-cpu", type=int, default=0)
    ln.add_argument("--load-cpu", type=int, default=1)
    ln.add_argument("--sample", type=int, default=50, help="answers checked with a real client")
    ln.add_argument("--results", help="write the JSON report to this file")
    ln.set_defaults(func=cmd_native)
    lw = lsub.add_parser(
        "writes",
        help="updates over REST PUT and Handle MODIFY_VALUE, beside their SQL ceiling",
        description="The write path (YCSB A's updates of index 2001), each figure as a ratio "
        "to a ceiling measured in the same run, on a scratch PostgreSQL database made on "
        "--database-url's server (loaded with --count identifiers; dropped after). Ceiling: "
        "the SQL one update needs at its least, from one process pinned to --server-cpus, "
        "--window in flight on an asyncpg pool: SELECT the values, then the node's one "
        "compare-and-set statement that writes them with the audit row. Then, against "
        "idnode serve for each --workers value (pinned to --server-cpus; more workers than "
        "those get --load-cpus too, and the report says so), from --load-cpus: REST "
        "PUT /api/handles/{h}?index=2001 with an API key, closed loop at --window, then "
        "open loop at half that rate (beside the ceiling at the same rate); Handle "
        "MODIFY_VALUE over TCP from --window threads, each in its own session logged in "
        "as the prefix admin (RSA key), closed loop. Identifiers uniform over the key "
        "space; updates/s, p50, p99, response codes and the generator's CPU (a saturated "
        "generator is flagged: its figure is a floor). A summary on stderr; the JSON "
        "report on stdout or to --json. Loopback only; every phase bounded in time.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    lw.add_argument("--count", type=int, default=100_000, help="identifiers loaded and drawn")
    lw.add_argument("--seconds", type=float, default=10.0, help="measuring time per point")
    lw.add_argument("--warmup", type=float, default=1.0, help="warm-up before each point")
    lw.add_argument(
        "--window",
        type=int,
        default=32,
        help="requests in flight (MODIFY_VALUE: sessions, a thread each)",
    )
    lw.add_argument("--workers", default="1", help="node workers, points: 1,2 measures both")
    lw.add_argument(
        "--database-url",
        help="a PostgreSQL server URL whose role may create databases; when not given, "
        "IDNODE_TEST_DATABASE_URL, else postgresql://postgres@127.0.0.1:5432/postgres",
    )
    lw.add_argument(
        "--redis-url", help="the node's Redis; when not given, a throwaway redis-server"
    )
    lw.add_argument("--server-cpus", default="0", help="CPUs for the node and the ceiling")
    lw.add_argument("--load-cpus", default="1", help="CPUs for the generators")
    lw.add_argument(
        "--ceiling-pool", type=int, default=0, help="the ceiling's connections (0: --window)"
    )
    lw.add_argument("--json", metavar="PATH", help="write the JSON report to this file")
    lw.set_defaults(func=cmd_writes)
    lh = lsub.add_parser(
        "report",
        help="render report.html again from a report.json",
        description="Render the HTML page of a load-test report from its JSON (after "
        "editing it, or with a newer harness).",
    )
    lh.add_argument("report", help="a report.json written by run or scale")
    lh.add_argument("--html", help="where to write (default: beside the JSON, .html)")
    lh.set_defaults(func=cmd_report)
    lq = lsub.add_parser(
        "plan",
        help="hardware for R registrations at Q lookups/s",
        description="A capacity plan from measured figures. Cache sizes follow from Zipfian "
        "popularity: the L1 hit ratio from how many entries fit a worker's L1, the Redis "
        "memory from how many of the hottest identifiers answer --cache-hit-ratio of lookups. "
        "Defaults are this project's measurements on its 2-core reference machine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    d = Plan(registrations=1.5e9, qps=1)
    lq.add_argument("--registrations", type=float, default=1.5e9)
    lq.add_argument("--qps", type=float, required=True, help="lookups per second to serve")
    for name, help_text in (
        ("bytes_per_identifier", "SQL bytes per identifier (idnode loadtest populate)"),
        ("cache_hit_ratio", "share of lookups L1 or Redis must answer (the rest reach SQL)"),
        ("zipf_theta", "Zipfian popularity constant (YCSB: 0.99)"),
        ("l1_mb_per_worker", "the node's --l1-max-mb"),
        ("l1_bytes_per_entry", "bytes an L1 entry takes"),
        ("hit_qps_per_core", "L1-hit lookups/s one core serves (idnode loadtest run)"),
        ("miss_qps_per_core", "lookups/s past L1 answered by Redis one core serves"),
        ("sql_miss_qps_per_core", "lookups/s reaching SQL one core serves (loadtest run)"),
        ("writes", "single-identifier updates/s to serve (REST PUT, Handle MODIFY_VALUE)"),
        ("batch_ids", "identifiers/s registered in batches"),
        ("writes_per_core", "updates/s one core serves (idnode loadtest writes)"),
        ("batch_ids_per_core", "batch registrations/s one core serves (loadtest.batch_bench)"),
        ("redis_bytes_per_key", "Redis bytes per cached identifier (reported by run)"),
        ("headroom", "spare capacity added to every figure"),
        ("cores_per_node", "cores of one node's host"),
        ("min_nodes", "fewest nodes (losing one must leave the others serving)"),
        ("redis_master_gib", "memory per Redis Cluster master"),
        ("redis_keys_per_master", "cached reads/s one Redis master serves (loadtest.l2_bench)"),
        ("partition_gib", "size of one handles partition"),
        ("sql_keys_per_server", "batched SQL lookups/s one PostgreSQL server answers"),
        ("search_index_bytes_per_identifier", "value index bytes per identifier (search_bench)"),
        ("search_index_write_ratio", "write rate with the value index / without (search_bench)"),
    ):
        lq.add_argument(
            "--" + name.replace("_", "-"), type=float, default=getattr(d, name), help=help_text
        )
    lq.add_argument(
        "--search-index",
        action="store_true",
        help="the node runs --search-index: add the value index to SQL storage",
    )
    lq.add_argument("--json", action="store_true")
    lq.set_defaults(func=cmd_plan)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: Any = args.func(args)
    return int(code)
