"""`idnode loadtest run` and `scale` as operators run them, in seconds and with tiny
registries: every door beside its ceiling, open and closed loop, a YCSB update mix
whose writes must land, several generators, Redis as L2, and the scale fit.

These are smoke runs: they check the harness measures and reports what happened
(codes, counts, tiers), never how fast anything was.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.generators import DOORS
from tests.e2e.node_process import IDNODE

pytestmark = pytest.mark.e2e

FAST = ["--seconds", "0.4", "--warmup", "0.2", "--server-cpus", "0", "--load-cpus", "0"]


def idnode(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def run_report(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "results"
    p = idnode("loadtest", "run", *FAST, "--results", str(out), *args)
    assert p.returncode == 0, p.stderr
    assert str(out / "report.html") in p.stdout
    html = (out / "report.html").read_text()
    report: dict[str, Any] = json.loads((out / "report.json").read_text())
    for door in report["doors"]:
        assert f"{door}: throughput against load" in html  # a chart per door
    return report


@pytest.mark.bench
def test_every_door_closed_loop_beside_its_ceiling(tmp_path: Path) -> None:
    report = run_report(
        tmp_path, "--doors", ",".join(DOORS), "--registry-size", "3000", "--windows", "8"
    )
    assert list(report["doors"]) == list(DOORS)
    for door, entry in report["doors"].items():
        (point,) = entry["points"]
        node, ceiling = point["node"], point["ceiling"]
        # every identifier drawn is registered: every answer is a success, none lost
        assert node["ops"] > 0 and node["codes"] == {"1": node["ops"]}, (door, node)
        assert node["lost"] == 0 and node["answered"] == node["sent"], (door, node)
        assert ceiling["ops"] > 0 and node["ratio_to_ceiling"] > 0, door
        assert node["p50_us"] <= node["p99_us"] <= node["max_us"], door
        assert node["generator_cpu"] > 0 and "generator_saturated" in node, door
        tiers = node["tiers"]
        # each answer came from L1 or, on a miss, from SQL (no Redis in this run)
        looked = tiers["lookups"]
        assert looked.get("l1_hit", 0) + looked.get("l1_miss", 0) >= node["ops"] * 0.9, door
        assert tiers["l2_hit_ratio"] is None, door
    batch = report["doors"]["grpc-batch"]["points"][0]["node"]
    assert batch["ops"] == batch["answered"] * 100  # identifiers, not calls


def test_open_loop_with_misses_generators_and_redis(tmp_path: Path, redis_url: str) -> None:
    report = run_report(
        tmp_path,
        "--doors",
        "udp",
        "--mode",
        "open",
        "--rates",
        "500,1500",
        "--generators",
        "2",
        "--miss-share",
        "0.5",
        "--distribution",
        "uniform",
        "--registry-size",
        "2000",
        "--redis-url",
        redis_url,
        "--prefill",
    )
    points = report["doors"]["udp"]["points"]
    assert [p["offered_per_s"] for p in points] == [500, 1500]
    for p in points:
        node = p["node"]
        assert node["generators"] == 2
        # about half the lookups ask for identifiers never registered: RC 100
        assert set(node["codes"]) == {"1", "100"}, node["codes"]
        assert 0.3 < node["codes"]["100"] / node["ops"] < 0.7, node["codes"]
        # open loop: what was sent is what the schedule asked for (0.4 s at the rate)
        assert abs(node["sent"] + node["dropped"] - 0.4 * p["offered_per_s"]) <= 4
        # prefilled: every registered identifier was in L1 before the clock started, so
        # only the never-registered ones (about half) miss it
        assert node["tiers"]["l1_hit_ratio"] > 0.35, node["tiers"]
        assert node["tiers"]["l2_hit_ratio"] is not None  # Redis was asked
        # the per-second series holds every answer of the point, by second
        series = node["per_second"]
        assert series and sum(s["answered"] for s in series) == node["answered"], series
        assert all(s["over_5ms"] <= s["over_1ms"] <= s["answered"] for s in series)
        # what the machine did meanwhile: steal, iowait and disk reads over the point
        host = node["host"]
        assert 0 <= host["steal_pct"] <= 100 and host["disk_read_mb"] >= 0, host
        assert p["ceiling"]["host"]["seconds"] > 0, p["ceiling"]
    assert isinstance(report["doors"]["udp"]["node_log"], list)  # what the node said
    # the throwaway SQLite registry was read into the page cache before the first point
    warmed = report["registry"]["prewarm"]
    assert warmed["done"] is True and warmed["bytes"] > 0, warmed
    assert "redis_mget_100_keys_per_s" in report["tier_ceilings"]
    cache = report["tier_ceilings"]["redis_cache"]
    assert cache["sampled_keys"] > 0 and cache["bytes_per_key"] > 50
    # the run's Redis keys are gone afterwards
    import redis

    r = redis.Redis.from_url(redis_url)
    assert not list(r.scan_iter(match="idnode-lt-*", count=1000))
    r.close()


def test_ycsb_b_updates_land_in_the_registry(tmp_path: Path) -> None:
    import sqlite3

    from idnode.registry.migrate import upgrade

    db = tmp_path / "lt.db"
    upgrade(f"sqlite:///{db}")
    p = idnode("loadtest", "populate", "--count", "500", "--database-url", f"sqlite:///{db}")
    assert p.returncode == 0, p.stderr
    report = run_report(
        tmp_path,
        "--doors",
        "tcp",
        "--mix",
        "B",
        "--windows",
        "19",
        "--no-ceilings",
        "--database-url",
        f"sqlite:///{db}",
    )
    point = report["doors"]["tcp"]["points"][0]
    updates = point["updates"]
    assert updates["ops"] > 0 and updates["codes"] == {"1": updates["ops"]}, updates
    assert "ceiling" not in point
    # the updates really changed values: some identifiers now carry version > 1
    with sqlite3.connect(db) as c:
        (changed,) = c.execute("SELECT count(*) FROM handles WHERE version > 1").fetchone()
    assert changed > 0


def test_dns_and_bad_arguments_are_refused_clearly(tmp_path: Path) -> None:
    if shutil.which("dnsperf") is None:  # with it, --doors dns runs (test_dns_bench_smoke)
        p = idnode("loadtest", "run", "--doors", "dns", "--results", str(tmp_path / "r"))
        assert p.returncode == 2 and "dnsperf is not installed" in p.stderr
    p = idnode("loadtest", "run", "--doors", "smtp")
    assert p.returncode == 2 and "unknown door 'smtp'" in p.stderr
    p = idnode("loadtest", "run", "--miss-share", "2")
    assert p.returncode == 2 and "--miss-share" in p.stderr
    assert not (tmp_path / "r").exists()
    p = idnode("loadtest", "scale", "--sizes", "1e6")
    assert p.returncode == 2 and "--sizes needs --server-url" in p.stderr
    p = idnode("loadtest", "report", str(tmp_path / "missing.json"))
    assert p.returncode == 2 and "cannot read" in p.stderr
    (tmp_path / "bad.json").write_text("{not json")
    p = idnode("loadtest", "report", str(tmp_path / "bad.json"))
    assert p.returncode == 2 and "cannot read" in p.stderr
    assert not (tmp_path / "bad.html").exists()


def test_report_renders_the_html_again(tmp_path: Path) -> None:
    report = run_report(tmp_path, "--doors", "udp", "--registry-size", "500", "--no-ceilings")
    source = tmp_path / "results" / "report.json"
    p = idnode("loadtest", "report", str(source), "--html", str(tmp_path / "again.html"))
    assert p.returncode == 0, p.stderr
    again = (tmp_path / "again.html").read_text()
    assert "udp: throughput against load" in again
    assert f"{report['doors']['udp']['points'][0]['node']['per_s']:,}" in again


@pytest.mark.bench
def test_scale_fits_cost_against_registry_size(tmp_path: Path) -> None:
    urls = []
    for n in (1000, 4000):
        url = f"sqlite:///{tmp_path}/lt{n}.db"
        p = idnode("loadtest", "populate", "--count", str(n), "--database-url", url)
        assert p.returncode == 0, p.stderr
        urls += ["--database-url", url]
    out = tmp_path / "scale"
    p = idnode("loadtest", "scale", *FAST, *urls, "--results", str(out))
    assert p.returncode == 0, p.stderr
    assert "per SQL-bound lookup" in p.stdout
    report = json.loads((out / "report.json").read_text())
    points = report["scale"]["points"]
    assert [p["registry_size"] for p in points] == [1000, 4000]
    for pt in points:
        # uniform lookups with L1 and Redis off: every one reached SQL and was found
        assert pt["codes"] == {"1": sum(pt["codes"].values())}
        assert pt["tiers"]["lookups"].get("l1_hit", 0) == 0
        assert pt["tiers"]["lookups"]["l3_hit"] > 0
    assert report["scale"]["fit"]["model"].startswith("us_per_lookup")
    assert "latency against registry size" in (out / "report.html").read_text()
