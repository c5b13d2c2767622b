"""`idnode loadtest` as operators run it: populate both backends, then resolve what was
loaded; the capacity plan."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.keyspace import handle
from idnode.resolver.client import exchange, resolution_request
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e


def idnode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([IDNODE, *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_populate_then_resolve(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = (
        f"sqlite:///{tmp_path}/lt.db"
        if backend == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    p = idnode("loadtest", "populate", "--count", "3000", "--chunk", "1000", "--database-url", url)
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["loaded"] == 3000 and report["registry_rows"] == 3000
    assert report["rows_per_s"] > 0 and report["bytes_per_identifier"] > 100
    n = NodeProcess(url, log=tmp_path / "lt.log")
    try:
        n.wait_ready()
        for i in (0, 1234, 2999):
            m = exchange(n.server, resolution_request(handle(i)))
            assert m.response_code == 1, (i, m)
        assert exchange(n.server, resolution_request(handle(3000))).response_code == 100
    finally:
        assert n.stop() == 0, n.log_text()


def scale_point(url: str, tmp_path: Path) -> dict[str, Any]:
    """`idnode loadtest scale` over one registry, briefly; its one point."""
    out = tmp_path / "scale"
    p = idnode(
        "loadtest",
        "scale",
        "--database-url",
        url,
        "--seconds",
        "0.3",
        "--warmup",
        "0.1",
        "--server-cpus",
        "0",
        "--load-cpus",
        "0",
        "--results",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    (point,) = json.loads((out / "report.json").read_text())["scale"]["points"]
    return dict(point)


def test_plan() -> None:
    p = idnode("loadtest", "plan", "--registrations", "1.5e9", "--qps", "100000", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["resolver_cores"] >= 1 and plan["sql_storage_gib"] > 0
    text = idnode("loadtest", "plan", "--qps", "100000").stdout
    assert "assumptions:" in text


def test_postgres_load_defers_the_key_index_and_refuses_overlaps(pg_url: str) -> None:
    import asyncio

    import asyncpg

    assert (
        idnode("loadtest", "populate", "--count", "2000", "--database-url", pg_url).returncode == 0
    )
    # a second slice goes into a non-empty table: the index is kept up row by row
    p = idnode(
        "loadtest", "populate", "--start", "2000", "--count", "500", "--database-url", pg_url
    )
    assert p.returncode == 0, p.stderr
    second = json.loads(p.stdout)
    assert second["indexes_deferred"] is False and second["registry_rows"] == 2500
    p = idnode("loadtest", "populate", "--start", "100", "--count", "10", "--database-url", pg_url)
    assert p.returncode == 3 and "overlaps identifiers already loaded" in p.stderr

    async def facts() -> tuple[int, str]:
        c = await asyncpg.connect(pg_url)
        try:
            n = await c.fetchval("SELECT count(*) FROM handles")
            idx = await c.fetchval(
                "SELECT indexdef FROM pg_indexes WHERE indexname = 'handles_pkey'"
            )
        finally:
            await c.close()
        return int(n), str(idx)

    n, idx = asyncio.run(facts())
    assert n == 2500 and "UNIQUE INDEX" in idx and "(handle)" in idx


def test_hash_partitioned_registry_resolves(pg_url: str, tmp_path: Path) -> None:
    p = idnode(
        "loadtest", "populate", "--count", "3000", "--partitions", "4", "--database-url", pg_url
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["hash_partitions"] == 4
    p = idnode(
        "loadtest", "populate", "--count", "1", "--partitions", "4", "--database-url", pg_url
    )
    assert p.returncode == 2 and "empty handles table" in p.stderr
    n = NodeProcess(pg_url, log=tmp_path / "part.log")
    try:
        n.wait_ready()
        for i in (0, 1500, 2999):
            assert exchange(n.server, resolution_request(handle(i))).response_code == 1, i
        assert exchange(n.server, resolution_request(handle(3000))).response_code == 100
    finally:
        assert n.stop() == 0, n.log_text()
    point = scale_point(pg_url, tmp_path)
    # sizes and prewarm count every partition: the parent holds nothing itself
    assert point["registry_size"] == 3000 and point["prewarmed_index_bytes"] > 0, point
    assert point["bytes_per_identifier"] > 100


def test_scale_on_postgres_reports_the_sql_ceiling(pg_url: str, tmp_path: Path) -> None:
    assert (
        idnode("loadtest", "populate", "--count", "2000", "--database-url", pg_url).returncode == 0
    )
    point = scale_point(pg_url, tmp_path)
    assert point["registry_size"] == 2000 and point["codes"] == {"1": sum(point["codes"].values())}
    assert point["ceiling_sql_batch_keys_per_s"] > 0 and point["ratio_to_ceiling"] > 0
    assert point["bytes_per_identifier"] > 100
    assert point["prewarmed_index_bytes"] > 0, point  # pg_prewarm read the primary key


@pytest.mark.bench
def test_scale_creates_and_populates_a_database_per_size(pg_url: str, tmp_path: Path) -> None:
    import asyncio

    from idnode.loadtest.scratch_db import database_url, drop_database

    server = database_url(pg_url, "postgres")
    names = ["idnode_lt_1500", "idnode_lt_2500"]

    async def drop() -> None:
        for n in names:
            await drop_database(server, n)

    asyncio.run(drop())
    try:
        out = tmp_path / "scale"
        args = ["--seconds", "0.3", "--warmup", "0.1", "--server-cpus", "0", "--load-cpus", "0"]
        p = idnode(
            "loadtest",
            "scale",
            "--server-url",
            server,
            "--sizes",
            "1500,2500",
            *args,
            "--results",
            str(out),
        )
        assert p.returncode == 0, p.stderr
        assert "populating idnode_lt_1500" in p.stderr and "populating idnode_lt_2500" in p.stderr
        report = json.loads((out / "report.json").read_text())
        assert [pt["registry_size"] for pt in report["scale"]["points"]] == [1500, 2500]
        assert "fit" in report["scale"]
        # a second run finds the databases populated and reuses them
        p = idnode(
            "loadtest",
            "scale",
            "--server-url",
            server,
            "--sizes",
            "1500",
            *args,
            "--results",
            str(tmp_path / "again"),
        )
        assert p.returncode == 0 and "populating" not in p.stderr, p.stderr
    finally:
        asyncio.run(drop())
