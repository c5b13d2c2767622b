"""`idnode loadtest` as operators run it: populate both backends, then resolve what was
loaded; the capacity plan."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from loadtest.keyspace import handle
from resolver.client import exchange, resolution_request
from tests.e2e.node_process import IDNODE, NodeProcess, run_module

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


def test_plan() -> None:
    p = idnode("loadtest", "plan", "--registrations", "1.5e9", "--qps", "100000", "--json")
    assert p.returncode == 0, p.stderr
    plan = json.loads(p.stdout)
    assert plan["resolver_cores"] >= 1 and plan["sql_storage_gib"] > 0
    text = idnode("loadtest", "plan", "--qps", "100000").stdout
    assert "assumptions:" in text


def test_scale_bench_smoke(pg_url: str) -> None:
    assert (
        idnode("loadtest", "populate", "--count", "2000", "--database-url", pg_url).returncode == 0
    )

    p = run_module(
        "loadtest.scale_bench",
        "--database-url",
        pg_url,
        "--count",
        "2000",
        "--keys",
        "500",
        "--seconds",
        "0.3",
        "--window",
        "8",
        "--server-cpu",
        "0",
        "--load-cpu",
        "0",
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r["response_codes"] == {"1": r["answered"]} and r["ratio_to_ceiling"] > 0
