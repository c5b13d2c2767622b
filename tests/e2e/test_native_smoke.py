"""`idnode loadtest native` end to end with tiny counts: wrk and h2load against each
door's ceiling and against a node, a sample of answers checked with real clients. It
asserts no rate: a figure is the benchmark's to report, not a test's to expect."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from idnode.loadtest.native import NativeConfig, grpc_body, missing, run, summary

pytestmark = [pytest.mark.e2e, pytest.mark.bench]


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (scripts/test installs wrk and nghttp2-client)")
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("server and load need a core each")
    cfg = NativeConfig(
        handles=500, seconds=1, warmup=0, connections=8, grpc_connections=2, streams=8, sample=20
    )
    return run(cfg, say=lambda m: None)


@pytest.mark.parametrize("door", ["rest", "page", "tunnel", "grpc"])
def test_each_door_is_driven_beside_its_ceiling(report: dict[str, Any], door: str) -> None:
    d = report["doors"][door]
    for side in ("ceiling", "idnode"):
        r = d[side]
        assert r["tool"] == ("h2load" if door == "grpc" else "wrk")
        assert r["requests"] > 0 and r["per_s"] > 0, r
        assert r["all_ok"], r  # no non-2xx, no socket errors, no timeouts
        assert r["p50_us"] is not None and r["p50_us"] <= r["p99_us"]
    if door == "grpc":
        assert d["idnode"]["status"]["2xx"] == d["idnode"]["requests"]
    assert d["idnode"]["ratio_to_ceiling"] > 0
    # real clients agree: every sampled identifier answers with the registry's values
    assert d["sample"] == {"asked": 20, "wrong": []}
    assert f"{door} (" in summary(report)


def test_the_grpc_body_is_length_prefixed() -> None:
    assert grpc_body(b"\x0a\x01x") == b"\x00\x00\x00\x00\x03\x0a\x01x"


def test_a_missing_tool_names_the_debian_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    why = missing(["rest", "grpc"])
    assert why is not None and "h2load and wrk" in why
    assert "apt-get install wrk nghttp2-client" in why
