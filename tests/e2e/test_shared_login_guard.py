"""The failed-login throttle shared across nodes: two `idnode serve` processes on one
PostgreSQL and one Redis count a guesser's failures together, so a client address or
an identity throttled on one is throttled on the other; a third node on the same
registry but its own Redis namespace (what every node was before the sharing) lets the
same guesser try its whole allowance again."""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from idnode.loadtest.scratch_db import create_database, drop_database
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e

SECRET = "S3cret-login-guard"
CLIENT_FAILURES = 3
IDENTITY_FAILURES = 5
# one try back per 10 minutes: nothing refills while the test runs
EXTRA = (
    "--auth-failures",
    str(CLIENT_FAILURES),
    "--auth-identity-failures",
    str(IDENTITY_FAILURES),
    "--auth-retry-interval",
    "600",
)
THROTTLED = 429


@pytest.fixture(scope="module")
def registry(
    pg_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, Path]]:
    """(database URL, node key file, a directory): a new registry with 88.166's admin."""
    name = f"idnode_guard_{secrets.token_hex(4)}"
    url = asyncio.run(create_database(pg_server[0], name))
    tmp = tmp_path_factory.mktemp("guard")
    reg = init_registry(tmp, "g", "--admin-secret", SECRET, database_url=url)
    yield url, reg.key, tmp
    asyncio.run(drop_database(pg_server[0], name))


@pytest.fixture(scope="module")
def nodes(
    registry: tuple[str, str, Path], redis_url: str
) -> Iterator[tuple[NodeProcess, NodeProcess, NodeProcess]]:
    """A and B share a Redis namespace (and so the counts); C has its own."""
    url, key, tmp = registry
    shared_ns = f"idnode-test-guard-{secrets.token_hex(4)}"
    started: list[NodeProcess] = []
    try:
        for name, ns in (("a", shared_ns), ("b", shared_ns), ("c", shared_ns + "-own")):
            n = NodeProcess(
                url,
                redis_url=redis_url,
                namespace=ns,
                log=tmp / f"{name}.log",
                extra=("--secret-key-file", key, *EXTRA),
            )
            started.append(n)
            n.wait_ready()
        yield started[0], started[1], started[2]
    finally:
        for n in started:
            assert n.stop() == 0, n.log_text()


def login(node: NodeProcess, secret: str, source: str, handle: str = "0.NA/88.166") -> int:
    """The HTTP status of a REST read authenticated as ``300:<handle>`` with ``secret``,
    sent from the loopback address ``source``."""
    token = base64.b64encode(f"300%3A{handle}:{secret}".encode()).decode()
    c = http.client.HTTPConnection(
        "127.0.0.1", node.http_port, timeout=30, source_address=(source, 0)
    )
    try:
        c.request("GET", "/api/handles/0.NA/88.166", headers={"Authorization": f"Basic {token}"})
        r = c.getresponse()
        body = r.read()
        assert r.status in (200, 401, THROTTLED), (r.status, body)
        if r.status == THROTTLED:
            assert json.loads(body)["responseCode"] == 603, body  # not checked at all
        return r.status
    finally:
        c.close()


def guesses(node: NodeProcess, n: int, source: str, handle: str = "0.NA/88.166") -> list[int]:
    """``n`` wrong secrets, each sent when the one before is answered: HTTP statuses."""
    return [login(node, f"wrong-{i}", source, handle) for i in range(n)]


def test_a_client_throttled_on_one_node_is_throttled_on_the_other(
    nodes: tuple[NodeProcess, NodeProcess, NodeProcess],
) -> None:
    a, b, c = nodes
    assert login(a, SECRET, "127.0.0.2") == 200  # the guard lets a right secret through
    on_a = guesses(a, CLIENT_FAILURES + 2, "127.0.0.2")
    assert on_a == [401] * CLIENT_FAILURES + [THROTTLED] * 2, on_a
    on_b = guesses(b, CLIENT_FAILURES + 2, "127.0.0.2")
    # B has not read this address's shared count before its first try: that one try is
    # checked (and counted, a debt), every later one refused. Unshared: all of its own 3.
    assert on_b.count(401) <= 1 and on_b[-CLIENT_FAILURES:] == [THROTTLED] * 3, on_b
    # even the right secret waits now (on A it was accepted before the guessing, and
    # the REST door remembers an accepted secret for a few seconds)
    assert login(b, SECRET, "127.0.0.2") == THROTTLED
    # another address is not affected
    assert login(b, SECRET, "127.0.0.3") == 200
    # Without the sharing (C counts on its own, as every node did): the guesser gets its
    # whole allowance again.
    on_c = guesses(c, CLIENT_FAILURES + 1, "127.0.0.2")
    assert on_c == [401] * CLIENT_FAILURES + [THROTTLED], on_c


def test_an_identity_guessed_from_many_addresses_is_throttled_on_both_nodes(
    nodes: tuple[NodeProcess, NodeProcess, NodeProcess],
) -> None:
    a, b, _ = nodes
    handle = "0.NA/88.166.GUARD"  # no such handle: the throttle counts the name anyway
    on_a = guesses(a, 2, "127.0.1.1", handle) + guesses(a, 2, "127.0.1.2", handle)
    on_b = guesses(b, 1, "127.0.1.3", handle)
    assert on_a + on_b == [401] * IDENTITY_FAILURES, (on_a, on_b)
    # the identity's shared count is empty: fresh addresses on either node are refused
    # (B read it when it counted its own failure; A reads it again after VIEW_SECONDS,
    # so A may check one more)
    assert guesses(b, 2, "127.0.1.4", handle) == [THROTTLED] * 2
    on_a = guesses(a, 3, "127.0.1.5", handle)
    assert on_a.count(401) <= 1 and on_a[-2:] == [THROTTLED] * 2, on_a
