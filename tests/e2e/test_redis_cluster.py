"""`idnode serve --redis-cluster` on PostgreSQL and a private Redis Cluster (3 masters, 3
replicas): REST writes answer 2xx and are served at once, handles are cached in Redis
over every master, and with the invalidation channel's master killed every answer stays
the last acknowledged write (issue 15: a PUT answered 500 after it committed)."""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node_process import IDNODE, NodeProcess, init_registry
from tests.redis_cluster import LocalCluster, start_cluster

pytestmark = pytest.mark.e2e
SECRET = "S3cret-for-cluster"
HANDLES = [f"88.166/RC-{i}" for i in range(40)]
IMPORTED = [f"88.166/IMP-{i}" for i in range(60)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    c = start_cluster()
    yield c
    c.stop()


def http(node: NodeProcess, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
    headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    req = urllib.request.Request(node.http + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def put(node: NodeProcess, handle: str, url: str) -> int:
    body = {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": url}}]}
    status, _ = http(node, "PUT", f"/api/handles/{handle}", json.dumps(body).encode())
    return status


def served(node: NodeProcess, handle: str) -> str | None:
    status, j = http(node, "GET", f"/api/handles/{handle}")
    if status != 200:
        return None
    return next(str(v["data"]["value"]) for v in j["values"] if v["type"] == "URL")


def cached_in_redis(cluster: LocalCluster, namespace: str) -> dict[str, int]:
    counts = {}
    for address in cluster.masters():
        with cluster.node(address) as r:
            counts[address] = sum(1 for _ in r.scan_iter(match=f"{namespace}:h:*", count=1000))
    return counts


def eventually(check: Any, bound: float = 30.0) -> Any:
    """Poll ``check`` until truthy, within a generous bound (fills land asynchronously)."""
    end = time.monotonic() + bound
    while not (got := check()) and time.monotonic() < end:
        time.sleep(0.1)
    return got


def test_a_node_on_a_redis_cluster_caches_and_survives_a_killed_master(
    cluster: LocalCluster, pg_url: str, tmp_path: Path
) -> None:
    db, key, _ = init_registry(tmp_path, "rc", "--admin-secret", SECRET, database_url=pg_url)
    # Imported before the node starts: never written through it, so their first lookups
    # fill Redis at once (a handle just written is not filled while its tombstone lives).
    rows = tmp_path / "imported.jsonl"
    rows.write_text(
        "".join(
            json.dumps({"handle": h, "values": [{"index": 1, "type": "URL", "data": f"i/{h}"}]})
            + "\n"
            for h in IMPORTED
        )
    )
    imported = subprocess.run(
        [IDNODE, "import", str(rows), "--database-url", db],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    ns = f"idnode-rc-{secrets.token_hex(3)}"
    node = NodeProcess(
        db,
        redis_url=cluster.url,
        namespace=ns,
        log=tmp_path / "node.log",
        extra=("--secret-key-file", key, "--redis-cluster"),
    )
    try:
        node.wait_ready()
        assert node.health().get("redis") == "ok", node.health()
        acknowledged: dict[str, str] = {}
        for h in HANDLES:
            assert put(node, h, f"https://example.cn/{h}/v0") == 201, node.log_text()
            acknowledged[h] = f"https://example.cn/{h}/v0"
        assert all(served(node, h) == acknowledged[h] for h in HANDLES)
        assert all(served(node, h) == f"i/{h}" for h in IMPORTED)
        # Cached in Redis, spread over every master (a hash tag per handle).
        assert eventually(lambda: sum(cached_in_redis(cluster, ns).values()) >= len(IMPORTED))
        counts = cached_in_redis(cluster, ns)
        assert counts and len(counts) == 3 and all(n > 0 for n in counts.values()), counts
        # A replace answers 200 and is served at once (no 500 after the commit).
        h = HANDLES[0]
        assert put(node, h, "https://example.cn/replaced") == 200, node.log_text()
        acknowledged[h] = "https://example.cn/replaced"
        assert served(node, h) == acknowledged[h]

        # Kill the master holding the invalidation channel (the listener's node) without
        # waiting: writes and reads go on through the failover.
        victim = cluster.master_of(f"{ns}:invalidate")
        cluster.kill_master(victim, wait=False)
        for round_ in (1, 2):
            for h in HANDLES[:20]:
                status = put(node, h, f"https://example.cn/{h}/v{round_}")
                assert status == 200, (status, node.log_text())
                acknowledged[h] = f"https://example.cn/{h}/v{round_}"
                assert served(node, h) == acknowledged[h]
        cluster.wait_ok(expect_masters=3)
        for h in HANDLES[20:30]:
            assert put(node, h, f"https://example.cn/{h}/after") == 200, node.log_text()
            acknowledged[h] = f"https://example.cn/{h}/after"
        # Every acknowledged write is what is served, twice (L1, then L1 or Redis).
        for _ in range(2):
            assert {h: served(node, h) for h in HANDLES} == acknowledged
        assert all(served(node, h) == f"i/{h}" for h in IMPORTED)
        assert node.health().get("redis") == "ok", node.health()
    finally:
        code = node.stop()  # a failure above is the one reported, not this
    assert code == 0, node.log_text()
    assert "Traceback" not in node.log_text()
