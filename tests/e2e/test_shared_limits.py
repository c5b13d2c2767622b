"""Limits shared across nodes: two `idnode serve` processes on one PostgreSQL and one
Redis hold one client's request rate and one prefix's registration quota between them;
with Redis gone, each still applies the limit on its own."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import pytest

from idnode.loadtest.processes import free_port, stop, wait_until
from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.resolver.client import exchange_udp, resolution_request
from idnode.resolver.codec import ResponseCode, decode, encode
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e

SECRET = "S3cret-shared-limits"
QUOTA = 25
RATE = 5  # a second, bursts of 10


@pytest.fixture(scope="module")
def registry(
    pg_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """(database URL, node key file, a directory): a new registry with 88.166's admin."""
    name = f"idnode_shared_{secrets.token_hex(4)}"
    url = asyncio.run(create_database(pg_server[0], name))
    tmp = tmp_path_factory.mktemp("shared")
    reg = init_registry(tmp, "s", "--admin-secret", SECRET, database_url=url)
    yield url, reg.key, tmp
    asyncio.run(drop_database(pg_server[0], name))


def _node(registry: tuple[str, str, Path], name: str, redis_url: str, ns: str) -> NodeProcess:
    url, key, tmp = registry
    n = NodeProcess(
        url,
        redis_url=redis_url,
        namespace=ns,
        log=tmp / f"{name}.log",
        extra=(
            "--secret-key-file",
            key,
            "--rate-limit",
            str(RATE),
            "--quota-overrides",
            f"88.166={QUOTA}",
        ),
    )
    n.wait_ready()
    return n


@pytest.fixture(scope="module")
def pair(
    registry: tuple[str, str, Path], redis_url: str
) -> Iterator[tuple[NodeProcess, NodeProcess]]:
    ns = f"idnode-test-shared-{secrets.token_hex(4)}"
    a = _node(registry, "a", redis_url, ns)
    try:
        b = _node(registry, "b", redis_url, ns)
    except BaseException:
        a.stop()
        raise
    yield a, b
    codes = [n.stop() for n in (a, b)]  # both stopped before either is judged
    for n, code in zip((a, b), codes, strict=True):
        assert code == 0, n.log_text()


def burst(port: int, n: int, handle: str = "88.166/NO-SUCH") -> list[int]:
    """``n`` resolutions sent at once from one client socket: their response codes."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(10)
    try:
        for _ in range(n):
            s.sendto(encode(resolution_request(handle)), ("127.0.0.1", port))
        return [decode(s.recv(65535)).response_code for _ in range(n)]
    finally:
        s.close()


def sequential(port: int, n: int) -> list[int]:
    """``n`` resolutions, each sent when the one before is answered: response codes."""
    request = resolution_request("88.166/NO-SUCH")
    return [exchange_udp("127.0.0.1", port, request).response_code for _ in range(n)]


def test_a_client_over_its_rate_on_one_node_is_limited_on_the_other(
    pair: tuple[NodeProcess, NodeProcess],
) -> None:
    a, b = pair
    from time import monotonic

    on_a = sequential(a.handle_port, 30)
    assert ResponseCode.REQUEST_LIMIT_DAILY in on_a  # the shared bucket is empty now
    started = monotonic()
    on_b = sequential(b.handle_port, 20)
    elapsed = monotonic() - started
    admitted = sum(c != ResponseCode.REQUEST_LIMIT_DAILY for c in on_b)
    # On its own B would admit its whole burst (10) of these; sharing the bucket, only
    # a lease's credit (a quarter of the burst: 2), what A's last dry spell let refill
    # (2) and what refilled at 5/s meanwhile (a slow runner's exchanges take longer:
    # the bound is the time they took, not a guess of it).
    assert admitted <= 2 + 2 + RATE * elapsed, (on_b, elapsed)


def _put(node: NodeProcess, handle: str) -> int:
    token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "x"}}]}
    req = urllib.request.Request(
        f"{node.http}/api/handles/{handle}",
        data=json.dumps(body).encode(),
        method="PUT",
        headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return int(json.loads(r.read())["responseCode"])
    except urllib.error.HTTPError as exc:
        return int(json.loads(exc.read())["responseCode"])


async def _count(url: str) -> int:
    c = await asyncpg.connect(url)
    try:
        return int(await c.fetchval("SELECT count(*) FROM handles WHERE handle LIKE '88.166/%'"))
    finally:
        await c.close()


def test_a_prefix_quota_holds_exactly_across_both_nodes_under_concurrent_writes(
    pair: tuple[NodeProcess, NodeProcess], registry: tuple[str, str, Path]
) -> None:
    a, b = pair
    jobs = [(a if i % 2 else b, f"88.166/Q-{i:03d}") for i in range(2 * QUOTA + 10)]
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda j: _put(*j), jobs))
    assert codes.count(ResponseCode.SUCCESS) == QUOTA, codes
    assert codes.count(ResponseCode.REGISTER_COUNT_LIMIT) == len(jobs) - QUOTA, codes
    assert asyncio.run(_count(registry[0])) == QUOTA
    # an existing handle may still be changed; a refused write used up nothing
    done = jobs[codes.index(ResponseCode.SUCCESS)]
    assert _put(*done) == ResponseCode.SUCCESS
    assert _put(a, "88.166/Q-LATE") == ResponseCode.REGISTER_COUNT_LIMIT


def test_redis_down_each_node_keeps_its_own_limit(
    registry: tuple[str, str, Path], tmp_path: Path
) -> None:
    port = free_port()
    redis = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_until(lambda: _pings(port), "redis-server", timeout=20.0, proc=redis)
        n = _node(registry, "down", url, "idnode-test-down")
        try:
            assert ResponseCode.REQUEST_LIMIT_DAILY in burst(n.handle_port, 30)
            stop(redis, 10)
            codes = burst(n.handle_port, 30)  # answered, and still limited
            assert ResponseCode.REQUEST_LIMIT_DAILY in codes

            # Redis is asked off the request path, and not while the client's bucket was
            # last seen empty (dry for chunk / rate seconds): the outage is found, and
            # logged, by a later request's lease. Keep the client asking until it is.
            def outage_logged() -> bool:
                burst(n.handle_port, 5)
                return "redis does not answer" in n.log_text()

            wait_until(outage_logged, "the outage logged", timeout=30.0, log=n.log_path)
            codes = burst(n.handle_port, 30)  # now on the worker's own limit
            assert ResponseCode.REQUEST_LIMIT_DAILY in codes
            log = n.log_text()
            assert "redis does not answer" in log and "applies its own limit" in log, log
            assert log.count("rate-limit: redis does not answer") == 1, log
        finally:
            code = n.stop()  # a failure above is the one reported, not this
        assert code == 0, n.log_text()
    finally:
        stop(redis, 10)


def _pings(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"PING\r\n")
        return s.recv(16).startswith(b"+PONG")
