"""`idnode loadtest writes` (python -m idnode.loadtest.write_bench) end to end with tiny
counts: the SQL ceiling, then a node of one worker and one of two, each through REST PUT
(closed and open loop) and Handle MODIFY_VALUE in authenticated sessions. It asserts no
rate: a figure is the benchmark's to report, not a test's to expect."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.bench]


@pytest.fixture(scope="module")
def report(
    pg_server: tuple[str, str], redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("server and load need a core each")
    out = tmp_path_factory.mktemp("writes") / "writes.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "idnode.loadtest.write_bench",
            "--count",
            "2000",
            "--seconds",
            "1",
            "--window",
            "8",
            "--workers",
            "1,2",
            "--database-url",
            pg_server[0],
            "--redis-url",
            redis_url,
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "of the ceiling" in p.stderr, p.stderr[-3000:]  # the summary
    return dict(json.loads(Path(out).read_text()))


def test_the_ceiling_writes(report: dict[str, Any]) -> None:
    c = report["ceiling"]
    assert c["closed"]["per_s"] > 0 and c["closed"]["all_success"], c["closed"]
    assert c["closed"]["postgres_cpu_us_per_update"] > 0 and "node_cpu" not in c["closed"]
    assert c["pool"] == 8 and c["client_cpus"] == [0]
    assert c["node_pool_per_worker"] == 8  # --database-pool-size: as wide as the ceiling
    # one open-loop ceiling point per node, at the rate that node was offered
    assert len(c["open"]) == 2
    for at in c["open"]:
        assert at["answered"] > 0 and at["offered_per_s"] > 0


@pytest.mark.parametrize("workers", [1, 2])
def test_each_node_answers_every_update_with_success(report: dict[str, Any], workers: int) -> None:
    (e,) = [e for e in report["nodes"] if e["workers"] == workers]
    assert e["node_exit_code"] == 0
    closed, opened = e["rest_put"]["closed"], e["rest_put"]["open_half_rate"]
    modify = e["modify_value"]["closed"]
    for r in (closed, opened, modify):
        assert r["answered"] > 0, r
        assert set(r["codes"]) == {"1"}, r["codes"]  # SUCCESS, nothing else
        assert r["lost"] == 0 and r["all_success"], r
        assert r["p50_us"] <= r["p99_us"]
        assert "generator_cpu" in r and "generator_saturated" in r
    assert closed["ratio_to_ceiling"] > 0 and modify["ratio_to_ceiling"] > 0
    for r in (closed, modify):  # the node's and PostgreSQL's CPU, from /proc, per update
        assert r["node_cpu"] > 0 and r["node_cpu_us_per_update"] > 0, r
        assert r["postgres_cpu"] > 0 and r["postgres_cpu_us_per_update"] > 0, r
        assert r["redis_cpu"] >= 0, r
    assert opened["offered_per_s"] == round(closed["per_s"] / 2)
    assert opened["ceiling_at_same_rate"]["per_s"] > 0
    assert opened["p99_ratio_to_ceiling"] is not None
    # each thread its own session, logged in once: no write was challenged
    assert modify["sessions"] == 8 and modify["challenges_after_login"] == 0
    assert modify["sessions_stopped"] == []


def test_two_workers_take_the_load_core_too_and_say_so(report: dict[str, Any]) -> None:
    one, two = (next(e for e in report["nodes"] if e["workers"] == w) for w in (1, 2))
    assert one["node_cpus"] == [0] and one["node_shares_load_cpus"] == []
    assert two["node_cpus"] == [0, 1] and two["node_shares_load_cpus"] == [1]
    assert report["config"]["database_url"].startswith("postgresql://")
