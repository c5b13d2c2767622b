"""`idnode serve` with a read replica (`--database-read-url`), end to end: a private
PostgreSQL primary and streaming replica (loadtest/pg_replica.py), two real nodes sharing
Redis, REST over real sockets.

While the replica's replay is paused, a write on either node is read back with its new
value on both nodes every time, and Redis never gets the old value back; lookups of
other handles keep going to the replica (its read counter on /metrics grows). A node
given the replica as its database_url refuses to start and says what to do instead.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import redis

from idnode.loadtest.pg_replica import ReplicatedPostgres, start_replicated_postgres
from idnode.loadtest.processes import clear_namespace, free_port, wait_until
from tests.e2e.node_process import IDNODE, NodeProcess, init_registry
from tests.reliability.test_outages import SECRET, put, rest_value

pytestmark = pytest.mark.e2e

READS = 5  # GETs of a written handle on each node while the replica is behind


class Topology:
    def __init__(
        self, pg: ReplicatedPostgres, a: NodeProcess, b: NodeProcess, r: redis.Redis, ns: str
    ) -> None:
        self.pg, self.a, self.b, self.redis, self.namespace = pg, a, b, r, ns

    def drop_cached(self) -> None:
        """Delete the value lists Redis holds for the nodes (their entries expiring)."""
        for key in list(self.redis.scan_iter(match=f"{self.namespace}:h:*", count=1000)):
            self.redis.delete(key)

    def tombstones(self) -> int:
        return len(list(self.redis.scan_iter(match=f"{self.namespace}:t:*", count=1000)))

    def cached_values(self) -> list[bytes]:
        """Every value list Redis holds for the nodes' namespace."""
        keys = list(self.redis.scan_iter(match=f"{self.namespace}:h:*", count=1000))
        values = cast(list[bytes | None], self.redis.mget(keys)) if keys else []
        return [v for v in values if v is not None]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("replicas")
    pg = start_replicated_postgres()
    ns = f"idnode-test-replicas-{secrets.token_hex(4)}"
    nodes: list[NodeProcess] = []
    try:
        reg = init_registry(tmp, "primary", "--admin-secret", SECRET, database_url=pg.primary_url)
        pg.wait_replayed()
        for name in ("a", "b"):
            n = NodeProcess(
                pg.primary_url,
                redis_url=redis_url,
                namespace=ns,
                log=tmp / f"{name}.log",
                extra=(
                    "--secret-key-file",
                    reg.key,
                    "--database-read-url",
                    pg.replica_url,
                    # The paused replica stays usable throughout: what is checked is
                    # which keys go to it, not the lag bound (tests/integration has it).
                    "--replica-max-lag",
                    "300",
                ),
            )
            nodes.append(n)
            n.wait_ready()
        for n in nodes:
            wait_until(
                lambda n=n: n.metric("idnode_replica_usable", replica=pg.replica_url) == 1.0,  # type: ignore[misc]
                "the node using its read replica",
                timeout=30,
                log=n.log_path,
            )
        yield Topology(pg, nodes[0], nodes[1], redis.Redis.from_url(redis_url), ns)
    finally:
        for n in nodes:
            n.stop()
        clear_namespace(redis_url, ns)
        pg.stop()


def test_lookups_are_served_by_the_replica(topology: Topology) -> None:
    t = topology
    assert put(t.a, "88.166/rep-plain", "https://plain/1") in (200, 201)
    t.pg.wait_replayed()
    t.drop_cached()  # as if their Redis entries had expired: b must ask the registry
    assert rest_value(t.b, "88.166/rep-plain") == "https://plain/1"
    reads_on_replica(t, t.b)


def reads_on_replica(t: Topology, n: NodeProcess) -> None:
    """Misses of ``n`` (handles nobody holds) are read on the replica once the node's
    poller has seen it replay what the node heard of; the count reaches /metrics after
    each poll. Asks a new one until the replica's count has grown."""
    start = n.metric("idnode_registry_reads_total", target=t.pg.replica_url)

    def asked_and_counted() -> bool:
        assert rest_value(n, f"88.166/rep-none-{secrets.token_hex(4)}") is None
        return n.metric("idnode_registry_reads_total", target=t.pg.replica_url) > start

    wait_until(asked_and_counted, "a miss read on the replica", timeout=30, interval=0.3)


def test_writes_are_read_back_new_while_the_replica_is_behind(topology: Topology) -> None:
    t = topology
    h, cold = "88.166/rep-moving", "88.166/rep-cold"
    assert put(t.a, h, "https://old/0") in (200, 201)
    assert put(t.a, cold, "https://cold/0") in (200, 201)  # not read before the pause
    t.pg.wait_replayed()
    wait_until(lambda: t.tombstones() == 0, "the writes' tombstones gone", timeout=30)
    # Both nodes and Redis hold the old value before the replica stops replaying.
    assert rest_value(t.a, h) == rest_value(t.b, h) == "https://old/0"
    wait_until(
        lambda: any(b"https://old/0" in v for v in t.cached_values()),
        "the old value in Redis (what the check below would see)",
        timeout=10,
    )
    t.pg.pause_replay()
    try:
        values = ["https://old/0"]
        for writer, other in ((t.a, t.b), (t.b, t.a)):
            value = f"https://new/{len(values)}"
            assert put(writer, h, value) in (200, 201)
            values.append(value)
            for _ in range(READS):  # the writer's node at once (Redis not filled yet)
                assert rest_value(writer, h) == value
            # Once the write's tombstone in Redis has expired, the other node's miss fills
            # Redis from what it reads: the primary's new value, not the replica's old one.
            wait_until(lambda: t.tombstones() == 0, "the write's tombstone gone", timeout=30)
            for _ in range(READS):
                assert rest_value(other, h) == value
            wait_until(
                lambda value=value: any(value.encode() in v for v in t.cached_values()),  # type: ignore[misc]
                "the new value cached in Redis",
                timeout=10,
            )
            older = [o.encode() for o in values[:-1]]
            assert not any(o in v for v in t.cached_values() for o in older)
        # Handles not written meanwhile are still read on the (paused) replica.
        t.drop_cached()
        assert rest_value(t.b, cold) == "https://cold/0"
        reads_on_replica(t, t.b)
    finally:
        t.pg.resume_replay()
    t.pg.wait_replayed()
    assert rest_value(t.a, h) == rest_value(t.b, h) == "https://new/2"


def test_a_replica_as_database_url_stops_the_start(topology: Topology, tmp_path: Path) -> None:
    t = topology
    p = subprocess.run(
        [
            IDNODE,
            "serve",
            "--database-url",
            t.pg.replica_url,
            "--listen",
            "127.0.0.1",
            "--handle-port",
            str(free_port()),
            "--http-port",
            str(free_port()),
            "--grpc-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert p.returncode != 0
    assert "database_url is a read replica" in p.stderr, p.stderr
    assert "--database-read-url" in p.stderr
    assert "Traceback" not in p.stderr
