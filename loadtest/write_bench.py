"""`idnode loadtest writes`: the write path (YCSB A's updates) beside its SQL ceiling.

    python -m idnode.loadtest.write_bench                       # 100,000 identifiers, 1 worker
    python -m idnode.loadtest.write_bench --workers 1,2 --json results/writes.json

In one run, on a scratch PostgreSQL database (created on ``--database-url``'s server,
loaded with identifiers 0..count-1 of the key space, dropped after):

1. the ceiling: the SQL one update needs at its least, nothing else. One process pinned
   to the server cores, closed loop with ``--window`` updates in flight on an asyncpg
   pool: ``SELECT vals`` of the handle, then the single statement PostgresStore writes
   with (``_UPDATE_IF_SAME``: the new values if they are still those read, and the audit
   row). The new values are encoded before the clock starts;
2. REST ``PUT /api/handles/{h}?index=2001`` with an API key, identifiers uniform over the
   key space: closed loop at ``--window`` (generator on the load cores, its CPU reported
   so a saturated generator shows), then open loop at half the closed-loop rate, with
   the ceiling driven open loop at that same rate for its latencies;
3. Handle MODIFY_VALUE of index 2001 over TCP: ``--window`` threads, each with its own
   session (SESSION_SETUP, then LOGIN_ID_SYSTEM as the prefix admin, RSA key), closed
   loop; every request carries the session's MAC, none is challenged.

2 and 3 run against ``idnode serve`` once per ``--workers`` value, pinned to the server
cores (a node with more workers than server cores gets the load cores too: the report
says so), with Redis (a throwaway redis-server unless ``--redis-url``). PostgreSQL and
Redis are not pinned. Everything is on 127.0.0.1 and every phase is bounded in time.
Each figure is reported as a ratio to the ceiling.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import os
import platform
import random
import secrets
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .generators import Job, Tally, async_phase, merge
from .keyspace import NODE_PREFIX, handle, values

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey

    from .processes import NodeProcess

Progress = Callable[[str], None]
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SUCCESS = "1"
TARGETS = {"updates_per_s": 10_000, "p99_ms_at_half_rate": 20}  # issue 17
# What the node writes for one MODIFY_VALUE of index 2001 (registry/writes.py): the
# audit row's op and detail; the actor is the prefix admin, 300:0.NA/88.166.
OP, DETAIL = "MODIFY_VALUE", "indexes [2001]"
ADMIN = (f"0.NA/{NODE_PREFIX}", 300)
# The ceiling's key sequence: drawn and encoded before the clock starts, generously
# (a PostgreSQL write on two shared cores is far below this rate); reused if it runs out.
CEILING_DRAWS_PER_S = 20_000


@dataclass
class WriteBenchConfig:
    count: int = 100_000  # identifiers loaded and drawn from, uniformly
    seconds: float = 10.0  # measured, per point
    warmup: float = 1.0  # before each point, not reported
    window: int = 32  # requests in flight (MODIFY_VALUE: sessions, one thread each)
    workers: list[int] = field(default_factory=lambda: [1])
    database_url: str = ""  # a PostgreSQL server; empty: IDNODE_TEST_DATABASE_URL or local
    redis_url: str = ""  # empty: a throwaway redis-server
    server_cpus: list[int] = field(default_factory=lambda: [0])
    load_cpus: list[int] = field(default_factory=lambda: [1])
    ceiling_pool: int = 0  # the ceiling's connections; 0: --window

    def check(self) -> None:
        if self.count < 1 or self.window < 1 or self.seconds <= 0 or self.warmup < 0:
            raise ValueError("--count, --window and --seconds must be positive")
        if self.seconds > 300 or self.count > 10_000_000 or self.window > 1000:
            raise ValueError("--seconds is at most 300, --count 10,000,000, --window 1000")
        if not self.workers or min(self.workers) < 1:
            raise ValueError("--workers lists node worker counts, e.g. 1,2")
        if not 0 <= self.ceiling_pool <= 1000:  # the node takes it as --database-pool-size
            raise ValueError("--ceiling-pool is 1 to 1000 connections (0: --window)")
        allowed = os.sched_getaffinity(0)
        for cpu in self.server_cpus + self.load_cpus:
            if cpu not in allowed:
                raise ValueError(f"CPU {cpu} is not one this process may use ({sorted(allowed)})")
        if not self.server_cpus or not self.load_cpus:
            raise ValueError("--server-cpus and --load-cpus name a CPU each at least")

    @property
    def server(self) -> str:
        return self.database_url or os.environ.get("IDNODE_TEST_DATABASE_URL") or DEFAULT_SERVER


# --- the ceiling -----------------------------------------------------------------------


def _new_values(i: int) -> bytes:
    """Identifier i's values with index 2001 replaced, as an update leaves them."""
    from idnode.resolver.codec import HandleValue, encode_values

    v = values(i)
    name = HandleValue(2001, "productName", f"更新 {i}".encode(), timestamp=v[2].timestamp)
    return encode_values([v[0], v[1], name])


def ceiling_updates(count: int, n: int, seed: int) -> list[tuple[str, bytes]]:
    """``n`` updates (the stored key, the new values) uniform over identifiers 0..count-1."""
    from idnode.registry.names import normalize

    rng = random.Random(seed)
    drawn = [rng.randrange(count) for _ in range(n)]
    new = {i: (normalize(handle(i)), _new_values(i)) for i in set(drawn)}
    return [new[i] for i in drawn]


async def _ceiling(
    url: str, pool_size: int, job: Job, updates: list[tuple[str, bytes]]
) -> dict[str, Any]:
    import asyncpg

    from idnode.registry.auth import Identity
    from idnode.registry.pg_pool import ConnectionPool
    from idnode.registry.postgres_store import _UPDATE_IF_SAME, CAS_ATTEMPTS
    from idnode.registry.store import now

    actor = str(Identity(*ADMIN))
    # the node's own pool, so the ceiling pays what the node pays to borrow a connection
    pool = ConnectionPool(lambda: asyncpg.connect(url), pool_size)
    await pool.open(min_size=pool_size)
    lost_races = 0

    async def update(k: int) -> int | str:
        nonlocal lost_races
        key, new = updates[k]
        async with pool.acquire() as c:
            for _ in range(CAS_ATTEMPTS):  # as the node: decided again after a lost race
                before = await c.fetchval("SELECT vals FROM handles WHERE handle = $1", key)
                if before is None:
                    return "missing"
                wrote = await c.fetchval(
                    _UPDATE_IF_SAME,
                    key,
                    before,
                    new,
                    now(),
                    actor,
                    OP,
                    key,
                    1,
                    hashlib.sha256(before).hexdigest(),
                    hashlib.sha256(new).hexdigest(),
                    DETAIL,
                )
                if wrote is not None:
                    return 1
                lost_races += 1
        return "lost_race"

    try:
        # read before the pool closes: a backend's CPU is gone from /proc once it exits
        used = _CpuReading(None)
        if job.warmup > 0:
            await async_phase(update, len(updates), job, job.warmup)
        tally, wrapped = await async_phase(update, len(updates), job, job.seconds)
        spent = used.done()
    finally:
        await pool.close()
    out = merge([tally.result(job.seconds, wrapped)])
    out["lost_races_retried"] = lost_races
    spent.into(out)
    return _finish(out)


def ceiling(url: str, cfg: WriteBenchConfig, *, rate: float = 0.0) -> dict[str, Any]:
    """The ceiling, closed loop at --window (or open loop at ``rate``), from this process
    pinned to the server cores (its CPU is reported as the generator's)."""
    import uvloop

    job = Job(
        door="ceiling",
        host="127.0.0.1",
        port=0,
        mode="open" if rate else "closed",
        seconds=cfg.seconds,
        warmup=cfg.warmup,
        rate=rate,
        window=cfg.window,
    )
    n = max(1000, int(CEILING_DRAWS_PER_S * (cfg.seconds + cfg.warmup + 1)))
    updates = ceiling_updates(cfg.count, n, seed=7 if rate else 3)
    with _pinned(cfg.server_cpus):
        out = uvloop.run(_ceiling(url, cfg.ceiling_pool or cfg.window, job, updates))
    if rate:
        out["offered_per_s"] = round(rate)
    return out


# --- the node: REST PUT ------------------------------------------------------------------


def rest_put(
    node: NodeProcess, api_key: str, cfg: WriteBenchConfig, rate: float = 0.0
) -> dict[str, Any]:
    """The load test's update generator (generators.py, door ``update``) on the load
    cores: closed loop at --window, or open loop at ``rate``."""
    from .run import run_point

    job = Job(
        door="update",
        host="127.0.0.1",
        port=node.http_port,
        mode="open" if rate else "closed",
        seconds=cfg.seconds,
        warmup=cfg.warmup,
        rate=rate,
        window=cfg.window,
        registry_size=cfg.count,
        distribution="uniform",
        seed=11 if rate else 5,
        api_key=api_key,
        cpu=cfg.load_cpus[0],
    )
    out: dict[str, Any] = run_point([job], None)["updates"]
    if rate:
        out["offered_per_s"] = round(rate)
    return _finish(out)


# --- the node: Handle MODIFY_VALUE in authenticated sessions ------------------------------


def _sessions(node: NodeProcess, key: RSAPrivateKey, n: int) -> list[Any]:
    """``n`` AdminClients, each in its own session, logged in as the prefix admin."""
    from idnode.resolver.client import AdminClient
    from idnode.resolver.codec import ResponseCode

    clients = []
    try:
        for _ in range(n):
            c = AdminClient(node.server, *ADMIN, private_key=key, timeout=10.0)
            clients.append(c)
            c.open_session()
            r = c.login()
            if r.response_code != ResponseCode.SUCCESS:
                raise RuntimeError(f"LOGIN_ID_SYSTEM as {ADMIN[1]}:{ADMIN[0]}: {r.response_code}")
    except BaseException:
        for c in clients:
            c.close()
        raise
    return clients


def _answered_a_challenge(client: Any) -> bool:
    """Was the last thing the client sent an answer to a challenge (its last request
    was challenged, not taken on the session's MAC)?"""
    from idnode.resolver.codec import OpCode

    return bool(client.sent) and (
        int.from_bytes(client.sent[-1][20:24], "big") == OpCode.CHALLENGE_RESPONSE
    )


def modify_value(node: NodeProcess, key: RSAPrivateKey, cfg: WriteBenchConfig) -> dict[str, Any]:
    """--window threads on the load cores, each with its own authenticated session,
    closed loop: MODIFY_VALUE of index 2001 of an identifier drawn uniformly."""
    from idnode.resolver.codec import HandleValue, Message, ModifyValueRequest, OpCode

    clients = _sessions(node, key, cfg.window)
    start = time.perf_counter() + 0.2  # every thread starts together
    measure_from = start + cfg.warmup
    end = measure_from + cfg.seconds
    tallies = [Tally() for _ in clients]
    challenged = [0] * len(clients)
    stopped: list[str] = []

    def loop(t: int) -> None:
        c, tally, rng = clients[t], tallies[t], random.Random(100 + t)
        clock = time.perf_counter
        time.sleep(max(0.0, start - clock()))
        k = 0
        while (t0 := clock()) < end:
            k += 1
            value = HandleValue(2001, "productName", f"更新 {t}-{k}".encode())
            m = Message(
                op_code=OpCode.MODIFY_VALUE,
                body=ModifyValueRequest(handle(rng.randrange(cfg.count)), (value,)),
            )
            try:
                code: int | str = int(c.request(m)[-1].response_code)
                challenged[t] += _answered_a_challenge(c)
            except Exception as exc:  # counted by kind; the session's state is unknown: stop
                code = f"error:{type(exc).__name__}"
                stopped.append(f"session {t}: {type(exc).__name__}: {exc}")
            if t0 >= measure_from:
                tally.sent += 1
                tally.done(clock() - t0, code, t0)
            if isinstance(code, str):
                return

    threads = [threading.Thread(target=loop, args=(t,), daemon=True) for t in range(len(clients))]
    try:
        with _pinned(cfg.load_cpus):  # threads take the mask of the thread starting them
            cpu0 = time.process_time()
            for th in threads:
                th.start()
        for th in threads:
            th.join(timeout=max(0.0, end - time.perf_counter()) + 30)
        cpu = time.process_time() - cpu0
    finally:
        for c in clients:
            c.close()
    out = merge([t.result(cfg.seconds, False) for t in tallies])
    # one process, many threads: the generator's CPU is the process's (it does nothing else)
    busy = cpu / (end - start)
    out["generator_cpu"] = round(busy, 3)
    out["generator_saturated"] = busy >= 0.9 * len(cfg.load_cpus)
    out["sessions"] = len(clients)
    out["challenges_after_login"] = sum(challenged)
    out["sessions_stopped"] = stopped[:10]
    return _finish(out)


# --- shared ------------------------------------------------------------------------------


def _finish(r: dict[str, Any]) -> dict[str, Any]:
    """Whether every answer was a success, and nothing was lost or dropped."""
    for k in ("histogram", "generators"):
        r.pop(k, None)
    r["all_success"] = (
        r["answered"] > 0
        and set(r["codes"]) == {SUCCESS}
        and r["lost"] == 0
        and r.get("dropped", 0) == 0
    )
    return r


@contextmanager
def _pinned(cpus: list[int]) -> Iterator[None]:
    own = os.sched_getaffinity(0)
    os.sched_setaffinity(0, set(cpus))
    try:
        yield
    finally:
        os.sched_setaffinity(0, own)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


async def _vacuum(url: str) -> None:
    """The dead row versions an earlier phase's updates left, cleared before the next
    (each phase starts from the same kind of table)."""
    import asyncpg

    c = await asyncpg.connect(url)
    try:
        await c.execute("VACUUM (ANALYZE) handles")
    finally:
        await c.close()


def node_cpus(cfg: WriteBenchConfig, workers: int) -> list[int]:
    """The server cores, and the load cores too when the workers outnumber them."""
    if workers <= len(cfg.server_cpus):
        return list(cfg.server_cpus)
    return sorted(set(cfg.server_cpus) | set(cfg.load_cpus))


def measure_node(
    cfg: WriteBenchConfig,
    url: str,
    redis_url: str,
    workers: int,
    access: tuple[str, RSAPrivateKey],
    tmp: Path,
    say: Progress,
) -> dict[str, Any]:
    from idnode.registry.sealing import Sealer

    from .processes import NodeProcess, clear_namespace

    cpus = node_cpus(cfg, workers)
    shared = sorted(set(cpus) & set(cfg.load_cpus))
    entry: dict[str, Any] = {
        "workers": workers,
        "node_cpus": cpus,
        "load_cpus": cfg.load_cpus,
        "node_shares_load_cpus": shared,
    }
    key_file = tmp / "node.key"  # a node key, as any node has: it seals session keys
    if not key_file.exists():
        Sealer.from_file(key_file, create=True)
    namespace = f"idnode-writes-{secrets.token_hex(3)}"
    say(
        f"idnode serve: {workers} worker(s) on CPU {cpus}"
        + (f" (sharing the load CPU {shared})" if shared else "")
    )
    node = NodeProcess(
        url,
        redis_url=redis_url,
        namespace=namespace,
        workers=workers,
        extra=(
            "--log-level",
            "warning",
            "--secret-key-file",
            str(key_file),
            "--sessions-per-client",
            str(max(64, cfg.window + 8)),
            # each worker as many connections as the ceiling has (one worker: equally wide)
            "--database-pool-size",
            str(cfg.ceiling_pool or cfg.window),
        ),
        log=tmp / f"node-{workers}.log",
        cpus=cpus,
    )
    try:
        node.wait_ready(timeout=60)
        say(f"  REST PUT, closed loop, window {cfg.window}")
        closed = _with_cpu(node, lambda: rest_put(node, access[0], cfg))
        half = closed["per_s"] / 2
        say(f"  REST PUT, open loop at {half:,.0f}/s (half the closed-loop rate)")
        opened = rest_put(node, access[0], cfg, rate=half) if half >= 1 else None
        say(f"  Handle MODIFY_VALUE over TCP, {cfg.window} authenticated sessions")
        modify = _with_cpu(node, lambda: modify_value(node, access[1], cfg))
    finally:
        code = node.stop()
        clear_namespace(redis_url, namespace)
    entry["node_exit_code"] = code
    entry["rest_put"] = {"closed": closed, "open_half_rate": opened}
    entry["modify_value"] = {"closed": modify}
    return entry


SERVICES = {"postgres": ("postgres",), "redis": ("redis-server",)}


class _CpuReading:
    """CPU used from now until done(): the node's (when given), and PostgreSQL's and
    Redis's machine-wide. into() adds each as cores busy and as µs per update. On these
    shared machines the rates drift; the cost per update says whether a change made the
    node cheaper, and where the machine's two cores go."""

    def __init__(self, node: NodeProcess | None) -> None:
        self.node = node
        self.before, self.t0 = self._read(), time.monotonic()
        self.busy: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        from .processes import cpu_seconds, cpu_seconds_named

        out = {name: cpu_seconds_named(*comms) for name, comms in SERVICES.items()}
        if self.node is not None:
            out["node"] = cpu_seconds(self.node.proc.pid)
        return out

    def done(self) -> _CpuReading:
        after, wall = self._read(), time.monotonic() - self.t0
        self.busy = {name: (after[name] - self.before[name]) / wall for name in after}
        return self

    def into(self, out: dict[str, Any]) -> None:
        rate = out["per_s"]
        for name, busy in self.busy.items():
            out[f"{name}_cpu"] = round(busy, 3)
            out[f"{name}_cpu_us_per_update"] = round(busy / rate * 1e6) if rate else None


def _with_cpu(node: NodeProcess, phase: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The phase's result with the CPU it cost (_CpuReading), warm-up included (at the
    same rate)."""
    used = _CpuReading(node)
    out = phase()
    used.done().into(out)
    return out


def run(
    cfg: WriteBenchConfig, say: Progress = lambda m: print(m, file=sys.stderr)
) -> dict[str, Any]:
    import asyncpg

    from idnode.registry.migrate import upgrade
    from idnode.registry.store import redact_url

    from .populate import populate_postgres
    from .processes import stop
    from .redis_cluster import standalone_redis
    from .run import make_admin_access
    from .scratch_db import create_database, drop_database

    cfg.check()
    server = cfg.server
    if not server.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"--database-url names a PostgreSQL server, not {redact_url(server)}")
    report: dict[str, Any] = {
        "harness": "idnode loadtest writes",
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "config": asdict(cfg) | {"database_url": redact_url(server), "redis_url": ""},
        "targets": TARGETS,
    }
    tmp = Path(tempfile.mkdtemp(prefix="idnode-writes-"))
    name = f"idnode_writes_{secrets.token_hex(3)}"
    redis_proc, redis_dir = None, ""
    try:
        try:
            url = asyncio.run(create_database(server, name))
        except (OSError, asyncpg.PostgresError) as exc:
            raise RuntimeError(
                f"cannot create a scratch database on {redact_url(server)}: {exc}"
            ) from exc
        try:
            upgrade(url)
            say(f"loading {cfg.count:,} identifiers into {name}")
            loaded = asyncio.run(populate_postgres(url, 0, cfg.count))
            access = asyncio.run(make_admin_access(url))
            report["registry"] = {
                "backend": "postgresql",
                "identifiers": cfg.count,
                "bytes_per_identifier": loaded["bytes_per_identifier"],
            }
            if cfg.redis_url:
                redis_url = cfg.redis_url
                report["config"]["redis_url"] = redact_url(redis_url)
            else:
                redis_url, redis_proc, redis_dir = standalone_redis(
                    sorted(os.sched_getaffinity(0)), "idnode-writes-redis-"
                )
                report["config"]["redis_url"] = "a throwaway redis-server (not pinned)"
            pool = cfg.ceiling_pool or cfg.window
            say(f"ceiling: SELECT + compare-and-set UPDATE with its audit row, pool {pool}")
            report["ceiling"] = {
                "what": "per update, SELECT vals of the handle, then PostgresStore's one "
                "statement writing the new values only if unchanged, with the audit row "
                "(_UPDATE_IF_SAME); asyncpg, no node",
                "pool": pool,
                "node_pool_per_worker": pool,  # --database-pool-size given to the node
                "client_cpus": cfg.server_cpus,
                "closed": ceiling(url, cfg),
                "open": [],
            }
            report["nodes"] = []
            for w in cfg.workers:
                asyncio.run(_vacuum(url))
                entry = measure_node(cfg, url, redis_url, w, access, tmp, say)
                report["nodes"].append(entry)
                opened = entry["rest_put"]["open_half_rate"]
                if opened is not None:
                    # the ceiling's latency at the rate the node was offered
                    asyncio.run(_vacuum(url))
                    say(f"ceiling: open loop at {opened['offered_per_s']:,}/s")
                    at = ceiling(url, cfg, rate=opened["offered_per_s"])
                    report["ceiling"]["open"].append(at)
                    opened["ceiling_at_same_rate"] = {
                        k: at[k] for k in ("per_s", "p50_us", "p99_us", "all_success")
                    }
                _ratios(report["ceiling"]["closed"], entry)
        finally:
            asyncio.run(drop_database(server, name))
    finally:
        if redis_proc is not None:
            stop(redis_proc, 10)
            shutil.rmtree(redis_dir, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    report["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return report


def _ratios(ceiling_closed: dict[str, Any], entry: dict[str, Any]) -> None:
    """Rates as node/ceiling (1 is the ceiling's); latencies as node/ceiling (above 1:
    slower than the ceiling)."""
    for r in (entry["rest_put"]["closed"], entry["modify_value"]["closed"]):
        r["ratio_to_ceiling"] = _ratio(r["per_s"], ceiling_closed["per_s"])
        r["p99_ratio_to_ceiling"] = _ratio(r["p99_us"], ceiling_closed["p99_us"])
    opened = entry["rest_put"]["open_half_rate"]
    if opened is not None:
        at = opened["ceiling_at_same_rate"]
        opened["p50_ratio_to_ceiling"] = _ratio(opened["p50_us"], at["p50_us"])
        opened["p99_ratio_to_ceiling"] = _ratio(opened["p99_us"], at["p99_us"])


# --- the summary ---------------------------------------------------------------------------


def _ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1000:.1f} ms"


def _codes(r: dict[str, Any]) -> str:
    return "all SUCCESS" if r["all_success"] else f"NOT ALL SUCCESS: codes {r['codes']}"


def _cpu(r: dict[str, Any]) -> str:
    """ "node 0.63 (516 µs/update), postgres ..." for whichever were read."""
    return "CPU " + ", ".join(
        f"{name} {r[f'{name}_cpu']} ({r[f'{name}_cpu_us_per_update']} µs/update)"
        for name in ("node", *SERVICES)
        if f"{name}_cpu" in r
    )


def summary(report: dict[str, Any]) -> str:
    c = report["ceiling"]
    cc = c["closed"]
    lines = [
        f"ceiling (SELECT + compare-and-set UPDATE with its audit row, pool {c['pool']}, "
        f"client on CPU {c['client_cpus']}): {cc['per_s']:,} updates/s, p50 "
        f"{_ms(cc['p50_us'])}, p99 {_ms(cc['p99_us'])}, client CPU {cc['generator_cpu']}; "
        f"{_cpu(cc)}"
        + (" SATURATED (the client is the limit: a floor)" if cc["generator_saturated"] else "")
        + f"; {_codes(cc)}",
    ]
    for e in report["nodes"]:
        shared = e["node_shares_load_cpus"]
        lines.append(
            f"{e['workers']} worker(s) on CPU {e['node_cpus']}, load on CPU {e['load_cpus']}"
            + (f" (the node shares CPU {shared} with the load)" if shared else "")
            + ":"
        )
        for label, r in (
            ("REST PUT closed", e["rest_put"]["closed"]),
            ("MODIFY_VALUE closed", e["modify_value"]["closed"]),
        ):
            lines.append(
                f"  {label} (window {report['config']['window']}): {r['per_s']:,}/s = "
                f"{r['ratio_to_ceiling']} of the ceiling; p50 {_ms(r['p50_us'])}, p99 "
                f"{_ms(r['p99_us'])} ({r['p99_ratio_to_ceiling']} x the ceiling's); "
                f"{_cpu(r)}; generator CPU {r['generator_cpu']}"
                + (" SATURATED (a floor)" if r["generator_saturated"] else "")
                + f"; {_codes(r)}"
            )
        o = e["rest_put"]["open_half_rate"]
        if o is not None:
            at = o["ceiling_at_same_rate"]
            lines.append(
                f"  REST PUT open at {o['offered_per_s']:,}/s: {o['per_s']:,}/s answered; p50 "
                f"{_ms(o['p50_us'])}, p99 {_ms(o['p99_us'])} = {o['p99_ratio_to_ceiling']} x "
                f"the ceiling's p99 at that rate ({_ms(at['p99_us'])}); {_codes(o)}"
            )
    t = report["targets"]
    lines.append(
        f"issue 17 asks {t['updates_per_s']:,} updates/s, p99 <= {t['p99_ms_at_half_rate']} ms "
        f"at half that rate; load average {report['machine']['load_average_at_start']} at "
        f"start, {report['machine']['load_average_at_end']} at the end"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The same as `idnode loadtest writes` (its flags and --help)."""
    from .cli import main as loadtest_main

    return loadtest_main(["writes", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
