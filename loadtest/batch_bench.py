"""Registration throughput through the batch path, beside a raw-insert ceiling (issue 17).

In one run, on a scratch PostgreSQL database, for each ``--parallel`` value N in turn
(each over identifiers of its own, N uploads at once over disjoint slices of them):

* ceiling: the same rows, pre-encoded, inserted with raw asyncpg ``unnest`` statements of
  ``--batch`` into a table shaped like ``handles`` (no validation, no audit, no service,
  no invalidation), from N connections at once;
* service: ``RegistryService.batch_create`` in batches of ``--batch`` by the node's prefix
  administrator, over 1200 enterprise prefixes, N uploads at once (as N concurrent REST
  batch jobs or console uploads): validation (including the metadata template every
  identifier names), HS_ADMIN authorisation, encoding, one multi-row insert and the audit
  rows per batch, then the caches told as the node tells them: ``on_change`` is the
  resolver core's ``invalidate`` (the node's stage chain, ``resolver/stages/chain.py``
  ``lookup_chain``, over a Redis tier of its own namespace), which records the keys in
  the registry's change feed, tombstones and deletes them in Redis, publishes them and
  waits for the confirmation of this core's own listener (a node always has one),
  concurrent writes' invalidations going as one (``resolver/invalidation_batches.py``).

``--processes P`` runs the service path in P processes, N uploads each, as a node's P
workers would run the uploads they received: each process has its own store, core and
invalidation listener in one shared Redis namespace, so every write waits for the
confirmation of every process's listener. Nothing is pinned then (the processes share
the cores with PostgreSQL and Redis); the clock runs from the go given to every ready
process to the last one's end, and the ceiling uses P x N connections.

The ceiling and the service path of one N run one after the other, so both tables have
taken the same rows before each point. Redis is ``--redis-url`` (its own namespace, left
empty) or a throwaway redis-server (not pinned, like PostgreSQL); ``--no-invalidation``
measures without any (``on_change`` None: the figure before issue 17 asked for it).

    python -m idnode.loadtest.batch_bench                      # 100,000 identifiers, N=2
    python -m idnode.loadtest.batch_bench --parallel 1,2,4 --json results/batch.json
    python -m idnode.loadtest.batch_bench --processes 2 --parallel 1   # a 2-worker node
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import multiprocessing
import os
import secrets
import shutil
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import asyncpg
from redis.exceptions import RedisError

from idnode.loadtest.processes import stop
from idnode.loadtest.redis_cluster import standalone_redis
from idnode.loadtest.report import emit
from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.auth import Identity
from idnode.registry.delegations import Delegations
from idnode.registry.migrate import upgrade
from idnode.registry.names import PrefixAuthority
from idnode.registry.prefix_applications import Suspensions
from idnode.registry.results import BatchItem
from idnode.registry.service import RegistryService
from idnode.registry.store import HandleRecord, Store, open_store, redact_url
from idnode.resolver.changefeed import ChangeLog
from idnode.resolver.codec import AdminRecord, HandleValue, encode_admin, encode_values
from idnode.resolver.codec.codes import ALL_ADMIN_PERMISSIONS, ResponseCode
from idnode.resolver.core import FIRST_CATCH_UP_SECONDS, Resolver
from idnode.resolver.l1 import L1Cache, Lifetimes
from idnode.resolver.l2 import RedisTier
from idnode.resolver.settings import Settings
from idnode.resolver.stages.chain import lookup_chain
from idnode.resolver.stages.delegation import DelegationStage
from idnode.resolver.stages.suspension import SuspensionStage

ADMIN = Identity("0.NA/88.166", 300)
TEMPLATE = {
    "prefix": "88.166",
    "version": "tpl-v1",
    "industry": "C/34/344/3443",
    "items": [{"key": "productName", "index": 2001, "required": True, "max_length": 64}],
}
GOAL_PER_S = 20_000  # issue 17: registrations/s through the service, invalidation included
CEILING_INSERT = (
    "INSERT INTO handles_ceiling (handle, display, prefix, vals, version, created_at,"
    " updated_at) SELECT h, d, p, v, 1, 0, 0 FROM unnest($1::text[], $2::text[],"
    " $3::text[], $4::bytea[]) AS t(h, d, p, v)"
)

Items = list[tuple[str, tuple[HandleValue, ...]]]
T = TypeVar("T")


def identifiers(n: int, start: int = 0) -> Items:
    return [
        (
            f"88.166.{1001 + i % 1200}/SN-{i:010d}",
            (
                HandleValue(1, "URL", f"https://pim.example.cn/p/{i}".encode()),
                HandleValue(1001, "TEMPLATE", b"tpl-v1"),
                HandleValue(2001, "productName", "液压阀 HV-200".encode()),
            ),
        )
        for i in range(start, start + n)
    ]


def slices(items: Sequence[T], n: int) -> list[Sequence[T]]:
    """``items`` in ``n`` contiguous, disjoint parts (an uploader's file each)."""
    size = -(-len(items) // n)
    return [items[i : i + size] for i in range(0, len(items), size)]


async def ceiling(url: str, items: Items, batch: int, parallel: int) -> float:
    """Raw multi-row inserts of the pre-encoded rows from ``parallel`` connections."""
    rows = [(h.upper(), h, h.split("/")[0], encode_values(v)) for h, v in items]
    conns = [await asyncpg.connect(url) for _ in range(parallel)]

    async def insert(c: asyncpg.Connection, part: Sequence[tuple[str, str, str, bytes]]) -> None:
        for i in range(0, len(part), batch):
            cols = list(zip(*part[i : i + batch], strict=True))
            await c.execute(CEILING_INSERT, *(list(col) for col in cols))

    try:
        start = time.perf_counter()
        await asyncio.gather(
            *(insert(c, part) for c, part in zip(conns, slices(rows, parallel), strict=False))
        )
        return len(rows) / (time.perf_counter() - start)
    finally:
        for c in conns:
            await c.close()


@dataclass
class Registration:
    """A registry service wired as a node wires it, and what its caches were told."""

    svc: RegistryService
    core: Resolver | None = None
    heard: int = 0  # keys this core's listener heard

    def told(self) -> dict[str, int]:
        if self.core is None:
            return {}
        inv = self.core.invalidations
        return {
            "invalidations": inv.batches,
            "writes_told": inv.writes,
            "keys_heard": self.heard,
        }

    async def told_since(self, before: dict[str, int], keys: int) -> dict[str, int]:
        """What the caches were told since ``before``, once this core's listener has
        heard ``keys`` more keys or 5 s on: a confirmation may come after its writer
        stopped waiting (ACK_WAIT). Called outside the clock."""
        settle = time.monotonic() + 5.0
        while self.core is not None and self.heard - before["keys_heard"] < keys:
            if time.monotonic() > settle:
                break
            await asyncio.sleep(0.01)
        return {k: v - before[k] for k, v in self.told().items()}


@contextlib.asynccontextmanager
async def registration(
    store: Store, redis_url: str | None, namespace: str = ""
) -> AsyncIterator[Registration]:
    """The service with the node's invalidation (``redis_url``) or with none (None).
    Processes that share ``namespace`` tell each other, as a node's workers do."""
    authority = PrefixAuthority(await store.homed_prefixes(), store.case_sensitive)
    if redis_url is None:
        yield Registration(RegistryService(store, authority))
        return
    s = Settings()  # the node's defaults for its caches
    tier = RedisTier(
        redis_url,
        namespace=namespace or f"idnode-batch-bench-{secrets.token_hex(4)}",
        ttl=s.l2_ttl,
        negative_ttl=max(1, int(s.negative_ttl)),
        max_batch=s.batch_max,
        timeout=s.l2_timeout,
    )
    delegations = Delegations(authority)
    chain = lookup_chain(
        store,
        authority,
        L1Cache(s.l1_max_mb * 1024 * 1024),
        tier,
        Lifetimes(s.l1_ttl, s.negative_ttl),
        max_batch=s.batch_max,
        delegations=delegations,
        suspensions=Suspensions(store.case_sensitive),
    )
    suspension = next(x for x in chain if isinstance(x, SuspensionStage))
    await next(x for x in chain if isinstance(x, DelegationStage)).refresh()
    await suspension.refresh()
    core = Resolver(
        chain,
        case_sensitive=store.case_sensitive,
        changes=ChangeLog(store),
        write_position=store.write_position,
        heard_write=store.heard_write,
        hold_replicas=store.hold_replicas,
    )
    reg = Registration(RegistryService(store, authority, on_change=core.invalidate), core)

    def forget(keys: list[str], position: str) -> None:
        reg.heard += len(keys)
        core.forget(keys, position)

    listen = asyncio.get_running_loop().create_task(
        tier.listen(forget, core.listener_subscribed, core.listener_lost)
    )
    try:
        if not await core.in_step(FIRST_CATCH_UP_SECONDS):
            raise RuntimeError(f"the core did not catch up with redis at {redact_url(redis_url)}")
        reg.svc.permissions.delegations = delegations  # as the node does
        reg.svc.writes.suspensions = reg.svc.applications.suspensions = suspension.suspensions
        yield reg
    finally:
        listen.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listen
        await core.drain()
        if not namespace:  # a shared one is cleared by whoever made it
            await tier.clear()
        await tier.close()


async def upload(
    create: Callable[[Items, Identity], Awaitable[list[BatchItem]]], items: Items, batch: int
) -> int:
    """One uploader: its batches one after the other; how many were registered."""
    ok = 0
    for i in range(0, len(items), batch):
        done = await create(items[i : i + batch], ADMIN)
        ok += sum(r.code == ResponseCode.SUCCESS for r in done)
    return ok


async def service_point(
    reg: Registration, items: Items, batch: int, parallel: int
) -> dict[str, Any]:
    before = reg.told()
    start = time.perf_counter()
    counts = await asyncio.gather(
        *(upload(reg.svc.batch_create, list(part), batch) for part in slices(items, parallel))
    )
    elapsed = time.perf_counter() - start
    ok = sum(counts)
    told = await reg.told_since(before, ok)
    retry_start = time.perf_counter()  # an idempotent retry of the last batch
    await reg.svc.batch_create(items[-batch:], ADMIN)
    retry = time.perf_counter() - retry_start
    return {
        "registered": ok,
        "per_s": round(ok / elapsed),
        "seconds": round(elapsed, 2),
        "idempotent_retry_of_one_batch_s": round(retry, 3),
        **told,
    }


# --- --processes: uploads in several processes, as in a node's several workers ----------

READY_SECONDS = 120.0  # for a process to open its registry, core and listener
JOIN_SECONDS = 30.0  # for the processes to tear down (their Redis and registry connections)


@dataclass(frozen=True)
class Share:
    """What one process of --processes registers, and where (sent to it pickled)."""

    url: str
    redis_url: str | None
    namespace: str  # the Redis namespace every process shares
    start: int  # its identifiers: start .. start + count
    count: int
    batch: int
    parallel: int  # its uploads at once
    total: int  # every process's identifiers: what its listener must hear


def _worker_main(share: Share, conn: Connection) -> None:
    """One process: its own store, core and listener in the shared namespace (so each
    write waits for every process's listener, as a node's does for every worker's),
    ``share.parallel`` uploads over its identifiers; the clock starts when the parent
    says go."""
    try:
        asyncio.run(_worker(share, conn))
    except BaseException:
        with contextlib.suppress(OSError):  # the parent may have gone, or hung up on us
            conn.send(("error", traceback.format_exc()))  # the parent says it, once
        raise SystemExit(1) from None


async def _worker(share: Share, conn: Connection) -> None:
    store = open_store(share.url)
    await store.open()
    try:
        async with registration(store, share.redis_url, share.namespace) as reg:
            items = identifiers(share.count, share.start)
            gc.collect()
            gc.freeze()
            conn.send(("ready", None))
            conn.recv()  # go: nothing is published before it, so the listener misses nothing
            before = reg.told()
            create = reg.svc.batch_create
            uploads = [upload(create, list(p), share.batch) for p in slices(items, share.parallel)]
            counts = await asyncio.gather(*uploads)
            end = time.monotonic()  # CLOCK_MONOTONIC: one clock for every process
            told = await reg.told_since(before, share.total)  # every process's keys
            conn.send(("done", {"registered": sum(counts), "end": end, **told}))
    finally:
        await store.close()


async def processes_point(
    url: str, redis_url: str | None, start: int, count: int, batch: int, parallel: int, n: int
) -> dict[str, Any]:
    """``n`` processes of ``parallel`` uploads each over disjoint parts of ``count``
    identifiers from ``start``: registrations/s from the go to the last one's end."""
    namespace = f"idnode-batch-bench-{secrets.token_hex(4)}"
    ctx = multiprocessing.get_context("spawn")
    base, extra = divmod(count, n)  # n parts, none empty (count >= n)
    sizes = [base + (i < extra) for i in range(n)]
    parts = list(zip(itertools.accumulate(sizes[:-1], initial=start), sizes, strict=True))
    conns: list[Connection] = []
    procs = []
    try:
        for s, c in parts:
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(
                target=_worker_main,
                args=(Share(url, redis_url, namespace, s, c, batch, parallel, count), theirs),
                daemon=True,
            )
            proc.start()
            theirs.close()  # the child's end lives in the child: its death is EOF here
            conns.append(mine)
            procs.append(proc)
        for conn in conns:
            _expect(await asyncio.to_thread(_receive, conn, READY_SECONDS), "ready")
        go = time.monotonic()
        for conn in conns:
            conn.send("go")
        done = [_expect(await asyncio.to_thread(_receive, conn, None), "done") for conn in conns]
        for proc, conn in zip(procs, conns, strict=True):  # and each one ended well after it
            await asyncio.to_thread(proc.join, JOIN_SECONDS)
            if proc.exitcode != 0:
                said = conn.recv() if conn.poll(0) else ("error", "")
                raise RuntimeError(
                    f"a benchmark process exited with {proc.exitcode} after its figures:\n{said[1]}"
                )
    finally:
        # A process still waiting for the go reads EOF and tears down; one still at work
        # is stopped after the deadline.
        for conn in conns:
            conn.close()
        deadline = time.monotonic() + JOIN_SECONDS
        for proc in procs:
            await asyncio.to_thread(proc.join, max(0.0, deadline - time.monotonic()))
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(5)
            if proc.is_alive():
                proc.kill()
                proc.join()
        if redis_url is not None:
            with contextlib.suppress(RedisError, OSError):  # what failed is raised already
                await _clear_namespace(redis_url, namespace)
    ok = sum(d["registered"] for d in done)
    elapsed = max(d["end"] for d in done) - go
    return {
        "processes": n,
        "registered": ok,
        "per_s": round(ok / elapsed),
        "seconds": round(elapsed, 2),
        # each process's listener hears every process's keys
        **{k: min(d[k] for d in done) for k in ("keys_heard",) if k in done[0]},
        **{k: sum(d[k] for d in done) for k in ("invalidations", "writes_told") if k in done[0]},
    }


def _receive(conn: Connection, timeout: float | None) -> Any:
    try:
        if not conn.poll(timeout):
            raise RuntimeError(f"a benchmark process said nothing within {timeout:.0f}s")
        return conn.recv()
    except EOFError:
        raise RuntimeError("a benchmark process ended without saying why") from None


def _expect(message: Any, kind: str) -> Any:
    what, body = message
    if what == "error":
        raise RuntimeError(f"a benchmark process failed:\n{body}")
    if what != kind:
        raise RuntimeError(f"a benchmark process said {what!r}, expected {kind!r}")
    return body


async def _clear_namespace(redis_url: str, namespace: str) -> None:
    tier = RedisTier(redis_url, namespace=namespace)
    try:
        await tier.clear()
    finally:
        await tier.close()


async def prepare_registry(store: Store) -> None:
    await store.home_prefix("88.166")
    # The node's prefix administrator (not a server admin): every batch looks up the
    # HS_ADMIN of each enterprise prefix and its ancestors, as for any enterprise.
    admin = HandleValue(
        100,
        "HS_ADMIN",
        encode_admin(AdminRecord(ALL_ADMIN_PERMISSIONS, ADMIN.handle, ADMIN.index)),
    )
    await store.put_many([HandleRecord(ADMIN.handle, encode_values([admin]))])
    svc = RegistryService(store, PrefixAuthority(["88.166"]))
    # Every identifier names this template, so each batch is checked against it too.
    r = await svc.put_template(TEMPLATE, ADMIN)
    if not r.ok:
        raise RuntimeError(f"the benchmark's template was refused: {r.message}")


async def measure(
    url: str,
    redis_url: str | None,
    count: int,
    batch: int,
    parallels: Sequence[int],
    processes: int = 1,
) -> list[dict[str, Any]]:
    c = await asyncpg.connect(url)
    try:
        await c.execute("CREATE TABLE handles_ceiling (LIKE handles INCLUDING ALL)")
    finally:
        await c.close()
    store = open_store(url)
    await store.open()
    points = []
    try:
        await prepare_registry(store)
        if processes > 1:
            for n, parallel in enumerate(parallels):
                items = identifiers(count, start=n * count)
                ceil = await ceiling(url, items, batch, parallel * processes)
                del items
                res = await processes_point(
                    url, redis_url, n * count, count, batch, parallel, processes
                )
                points.append(_point(parallel, parallel * processes, ceil, res))
            return points
        async with registration(store, redis_url) as reg:
            # Every point's uploads, made here in one go before any is measured (a node
            # holds one upload's lines at a time, and freezes what it made at start-up):
            # frozen out of the collector's way once, so full collections walking the
            # pre-made records are not charged to the service (they were ~9% of its
            # time), and every point runs with the same frozen set.
            inputs = [identifiers(count, start=n * count) for n in range(len(parallels))]
            gc.collect()
            gc.freeze()
            for parallel, items in zip(parallels, inputs, strict=True):
                ceil = await ceiling(url, items, batch, parallel)
                res = await service_point(reg, items, batch, parallel)
                points.append(_point(parallel, parallel, ceil, res))
    finally:
        await store.close()
    return points


def _point(parallel: int, connections: int, ceil: float, res: dict[str, Any]) -> dict[str, Any]:
    return {
        "parallel": parallel,
        "ceiling_raw_unnest_insert_per_s": round(ceil),
        "ceiling_parallel": connections,
        "service": res,
        "ratio_to_ceiling": round(res["per_s"] / ceil, 3),
        "ratio_to_goal": round(res["per_s"] / GOAL_PER_S, 3),
    }


def _parallels(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--parallel takes positive counts, e.g. 1,2,4")
    return values


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--count", type=int, default=100_000, help="identifiers per --parallel value")
    p.add_argument("--batch", type=int, default=2000)
    p.add_argument(
        "--parallel",
        type=_parallels,
        default=[2],
        help="uploads at once, one figure each (e.g. 1,2,4); the ceiling uses as many",
    )
    p.add_argument(
        "--pg-url",
        default=os.environ.get(
            "IDNODE_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL server URL where a scratch database may be created",
    )
    p.add_argument(
        "--redis-url", default="", help="the Redis to invalidate in (default: a throwaway one)"
    )
    p.add_argument(
        "--no-invalidation",
        action="store_true",
        help="no cache invalidation after each batch (on_change None)",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="run the uploads in this many processes, --parallel uploads each, as a node's "
        "workers would (each with its own core and listener, every write waiting for every "
        "listener); they are not pinned, and the ceiling uses as many connections in all",
    )
    p.add_argument(
        "--cpu",
        type=int,
        default=1,
        help="pin this process (-1: unpinned; with --processes > 1 nothing is pinned)",
    )
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    if not 1 <= args.processes <= args.count:
        p.error("--processes takes a positive count, at most --count")
    redis_proc, redis_dir, redis_url = None, "", args.redis_url or None
    redis_said = "none (--no-invalidation)"
    if not args.no_invalidation:
        if redis_url is None:  # started before this process is pinned: not pinned either
            redis_url, redis_proc, redis_dir = standalone_redis(
                sorted(os.sched_getaffinity(0)), "idnode-batch-redis-"
            )
            redis_said = "a throwaway redis-server (not pinned)"
        else:
            redis_said = redact_url(redis_url)
    if args.processes > 1:
        args.cpu = -1  # the processes share the cores with PostgreSQL and Redis, as a node's
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    name = f"idnode_batch_{secrets.token_hex(3)}"
    try:
        url = asyncio.run(create_database(args.pg_url, name))
        try:
            upgrade(url)
            points = asyncio.run(
                measure(
                    url,
                    None if args.no_invalidation else redis_url,
                    args.count,
                    args.batch,
                    args.parallel,
                    args.processes,
                )
            )
        finally:
            asyncio.run(drop_database(args.pg_url, name))
    finally:
        if redis_proc is not None:
            stop(redis_proc, 10)
            shutil.rmtree(redis_dir, ignore_errors=True)
    report = {
        "benchmark": "batch-registration",
        "count_per_point": args.count,
        "batch": args.batch,
        "cpu": args.cpu if args.cpu >= 0 else "unpinned",
        "processes": args.processes,
        "invalidation": "off" if args.no_invalidation else "on",
        "redis": redis_said,
        "goal_per_s": GOAL_PER_S,
        "points": points,
    }
    emit(report, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
