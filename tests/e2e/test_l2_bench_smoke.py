"""The L2 benchmark (loadtest/l2_bench.py) runs end to end on tiny counts: a standalone
Redis and a 3+3 Redis Cluster started and stopped, a report of the right shape, every
read a hit and no Redis error. It asserts no rate: a figure is the benchmark's to report."""

from __future__ import annotations

import pytest

from idnode.loadtest.l2_bench import L2BenchConfig, run, summary

pytestmark = pytest.mark.e2e


def test_a_short_run_reports_cluster_against_standalone() -> None:
    report = run(L2BenchConfig(keys=600, batch=64, seconds=0.3))
    for side in (report["standalone"], report["cluster"]):
        assert side["reads"] >= 600 and side["reads_per_s"] > 0 and side["fills_per_s"] > 0
        assert side["hit_ratio"] == 1.0 and side["errors"] == 0
    assert report["ratio_reads"] > 0 and report["ratio_fills"] > 0
    assert "keys/s" in summary(report) and "ratio" in summary(report)
