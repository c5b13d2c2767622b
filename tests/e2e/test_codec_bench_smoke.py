"""The codec benchmark runs and reports every case with a ratio (a smoke run, not a timing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.node_process import run_module

pytestmark = pytest.mark.e2e


def test_codec_bench_smoke(tmp_path: Path) -> None:
    out = tmp_path / "codec.json"
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "idnode.loadtest.codec_bench",
            "--seconds",
            "0.01",
            "--rounds",
            "1",
            "--cpu",
            "-1",
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    cases = [r["case"] for r in report["results"]]
    assert cases[0].startswith("ceiling")
    assert any("decode_resolution" in c for c in cases)
    assert any("encode_resolution_answer" in c for c in cases)
    assert report["results"][0]["ratio_to_ceiling"] == 1.0
    assert all(r["ops_per_s"] > 0 for r in report["results"])


def test_udp_bench_smoke(tmp_path: Path) -> None:
    """The UDP benchmark runs end to end (echo ceiling and the L1 path) in a second or two."""
    out = tmp_path / "udp.json"
    p = run_module(
        "idnode.loadtest.udp_bench",
        "--seconds",
        "0.3",
        "--handles",
        "200",
        "--window",
        "8",
        "--modes",
        "l1",
        "--server-cpu",
        "0",
        "--load-cpu",
        "0",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())["results"]
    assert res["ceiling_udp_echo"]["answered"] > 0
    assert res["l1_hot"]["response_codes"] == {"1": res["l1_hot"]["answered"]}
    assert res["l1_hot"]["ratio_to_ceiling"] > 0


def test_batch_bench_smoke(pg_server: tuple[str, str], redis_url: str, tmp_path: Path) -> None:
    """The registration benchmark runs end to end on a tiny count, per --parallel value,
    with the node's invalidation (every registered key heard by the core's listener)
    and, with --no-invalidation, without any."""
    out = tmp_path / "batch.json"
    common = ["--count", "3000", "--cpu", "-1", "--pg-url", pg_server[0], "--json", str(out)]
    p = run_module(
        "idnode.loadtest.batch_bench", *common, "--parallel", "1,2", "--redis-url", redis_url
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    assert report["invalidation"] == "on"
    assert [pt["parallel"] for pt in report["points"]] == [1, 2]
    for pt in report["points"]:
        assert pt["ceiling_parallel"] == pt["parallel"]
        assert pt["service"]["registered"] == 3000
        assert pt["service"]["keys_heard"] == 3000  # each key told, and confirmed
        assert pt["service"]["invalidations"] >= 2  # at least one per batch of 2000
        assert pt["ratio_to_ceiling"] > 0
    p = run_module("idnode.loadtest.batch_bench", *common, "--parallel", "1", "--no-invalidation")
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    assert report["invalidation"] == "off"
    (pt,) = report["points"]
    assert pt["service"]["registered"] == 3000
    assert "keys_heard" not in pt["service"]


def test_batch_bench_in_two_processes(
    pg_server: tuple[str, str], redis_url: str, tmp_path: Path
) -> None:
    """--processes 2: two processes share the work, as a node's two workers would, and
    each one's listener hears every key either registered (each write waits for both)."""
    out = tmp_path / "batch.json"
    p = run_module(
        "idnode.loadtest.batch_bench",
        *("--count", "5000", "--pg-url", pg_server[0], "--json", str(out)),
        *("--processes", "2", "--parallel", "1", "--redis-url", redis_url),
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(out.read_text())
    assert (report["processes"], report["cpu"]) == (2, "unpinned")
    (pt,) = report["points"]
    assert pt["ceiling_parallel"] == 2
    res = pt["service"]
    assert (res["processes"], res["registered"]) == (2, 5000)
    assert res["keys_heard"] == 5000  # the fewer any one process's listener heard
    assert res["writes_told"] == 4  # 2500 each: a batch of 2000 and one of 500
    assert pt["ratio_to_ceiling"] > 0


def test_grpc_bench_smoke(tmp_path: Path) -> None:
    """The gRPC benchmark runs end to end (echo ceiling, Resolve, BatchResolve)."""
    out = tmp_path / "grpc.json"
    p = run_module(
        "idnode.loadtest.grpc_bench",
        "--seconds",
        "0.3",
        "--handles",
        "50",
        "--batch",
        "100",
        "--concurrency",
        "4",
        "--server-cpu",
        "0",
        "--load-cpu",
        "0",
        "--json",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())["results"]
    assert res["ceiling_grpc_aio_echo"]["calls"] > 0
    assert res["resolve_unary"]["ratio_to_ceiling"] > 0
    assert res["batch_resolve"]["handles_per_s"] > 0
