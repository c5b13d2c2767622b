"""A running node opens at most ``--database-pool-size`` PostgreSQL connections per
worker: one `idnode serve --workers 1 --database-pool-size 3` on a scratch registry,
driven with concurrent REST writes and lookups of handles no cache holds, while a
separate connection counts the node's sessions in pg_stat_activity all along."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e

SECRET = "S3cret-for-the-pool"
POOL = 3
# Connections the node holds outside its pool: none. Without read replicas (their
# pools are per replica), a multi-worker change feed or partitioning (`init` only), the
# store's pool is the only thing in `idnode serve` that connects to PostgreSQL; the
# start's registry and node-key check (check_before_serving) opens its own store and
# closes it before the worker starts (gone by the time /healthz says ok), and Redis,
# were it given, holds no PostgreSQL connection. Seen at rest after the start: two
# connections, both the node's pool (the one made at open and one more for the start's
# concurrent lookups; `ss -tnp` showed no other socket of the node's to PostgreSQL).
OUTSIDE_POOL = 0
# Writes are what test the pool's bound: lookups go out in batches, at most as many at
# once as the pool has connections (the registry stage's Coalescer, max_inflight), so a
# pool that ignored its size would still see no more than 3 from them alone.
WRITES = 120  # distinct new handles, each a transaction holding a connection
MISSES = 120  # distinct handles nobody registered: no cache can answer, each asks SQL
CLIENTS = 48  # requests in flight at once

# The node's sessions: client backends on the scratch database but the sampler's own
# (autovacuum workers, which a burst of writes can start there, are not the node's).
COUNT = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    " AND backend_type = 'client backend' AND pid <> pg_backend_pid()"
)


def request(node: NodeProcess, method: str, handle: str, body: bytes | None = None) -> int:
    token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(
        f"{node.http}/api/handles/{handle}", data=body, method=method, headers=headers
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        e.read()
        return int(e.code)


def put(node: NodeProcess, handle: str) -> int:
    value = {"format": "string", "value": f"https://example.cn/{handle}"}
    body = json.dumps({"values": [{"index": 1, "type": "URL", "data": value}]}).encode()
    return request(node, "PUT", handle, body)


class Sampler:
    """Counts the node's connections from its own connection, as fast as it can, in a
    thread of its own, until stopped: every count seen."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.counts: list[int] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Sampler:
        self._thread.start()
        self._running.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._sample())
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc
            self._running.set()

    async def _sample(self) -> None:
        c = await asyncpg.connect(self.url)
        try:
            self.counts.append(int(await c.fetchval(COUNT)))
            self._running.set()
            while not self._stop.is_set():
                self.counts.append(int(await c.fetchval(COUNT)))
        finally:
            await c.close()


async def count_once(url: str) -> int:
    c = await asyncpg.connect(url)
    try:
        return int(await c.fetchval(COUNT))
    finally:
        await c.close()


def test_a_node_opens_at_most_its_pool_of_postgres_connections_under_load(
    tmp_path: Path, pg_url: str
) -> None:
    reg = init_registry(tmp_path, "pool", "--admin-secret", SECRET, database_url=pg_url)
    node = NodeProcess(
        pg_url,
        workers=1,
        log=tmp_path / "node.log",
        extra=("--secret-key-file", reg.key, "--database-pool-size", str(POOL)),
    )
    try:
        node.wait_ready()
        # At rest: the pool's connections (one made at open, more if the start's own
        # reads overlapped); at least one, so the count does see the node's sessions.
        at_rest = asyncio.run(count_once(pg_url))
        assert 1 <= at_rest <= POOL + OUTSIDE_POOL, at_rest
        assert put(node, "88.166/POOL-FIRST") in (200, 201), node.log_text()

        jobs: list[tuple[str, str]] = []
        for i in range(max(WRITES, MISSES)):
            if i < WRITES:
                jobs.append(("PUT", f"88.166/POOL-{i:04d}"))
            if i < MISSES:
                jobs.append(("GET", f"88.166/MISSING-{i:04d}"))

        def run(job: tuple[str, str]) -> tuple[str, str, int]:
            method, handle = job
            status = put(node, handle) if method == "PUT" else request(node, "GET", handle)
            return method, handle, status

        with Sampler(pg_url) as sampler, ThreadPoolExecutor(CLIENTS) as clients:
            results = list(clients.map(run, jobs))
        assert sampler.error is None, sampler.error

        failed = [
            r
            for r in results
            if (r[0] == "PUT" and r[2] not in (200, 201)) or (r[0] == "GET" and r[2] != 404)
        ]
        assert not failed, (failed[:10], node.log_text())
        # What was written reads back (these now from the registry through the pool too).
        assert request(node, "GET", "88.166/POOL-0000") == 200
        assert request(node, "GET", f"88.166/POOL-{WRITES - 1:04d}") == 200

        most = max(sampler.counts)
        # The load really borrowed connections at once, else the bound proves nothing...
        assert most >= 2, (most, len(sampler.counts))
        # ...and never past the pool, plus what the node holds outside it (none).
        assert most <= POOL + OUTSIDE_POOL, (most, sampler.counts)
    finally:
        code = node.stop()
    assert code == 0, node.log_text()
