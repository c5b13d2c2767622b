"""The cluster load test (loadtest/cluster_bench.py, `idnode loadtest cluster`) runs end
to end on tiny counts: the issue-15 topology started and stopped, a report of the right
shape, every write-then-read probe answered with the acknowledged value, with the replica
replaying and paused. It asserts no rate: a figure is the benchmark's to report."""

from __future__ import annotations

import pytest

from idnode.loadtest.cluster_bench import ClusterBenchConfig, run, summary

pytestmark = [pytest.mark.e2e, pytest.mark.bench]


def test_a_short_run_reports_one_node_three_nodes_l2_and_the_replica() -> None:
    cfg = ClusterBenchConfig(handles=300, seconds=0.3, warmup=0.1, window=4, probes=3, draws=500)
    report = run(cfg, lambda _: None)
    assert report["ceiling"]["per_s"] > 0
    for row in (report["one_node"], report["three_nodes"]):
        assert row["reads"]["per_s"] > 0 and row["ratio_to_ceiling"] is not None
        assert set(row["reads"]["codes"]) <= {"1"}, row["reads"]["codes"]  # all SUCCESS
        assert row["tiers"]["l1_hit_ratio"] is not None
    assert report["three_over_one"] is not None
    l2 = report["l2_path"]
    assert not l2["cluster"]["tiers"]["l1_hit_ratio"]  # L1 off: every lookup asks L2
    assert l2["cluster"]["tiers"]["l2_hit_ratio"] and l2["standalone"]["tiers"]["l2_hit_ratio"]
    assert l2["cluster_over_standalone"] is not None
    for name in ("replaying", "paused"):
        row = report["replica"][name]
        assert row["updates"]["per_s"] > 0 and sum(row["registry_reads"].values()) > 0
        probes = row["probes"]
        assert probes["writes_acknowledged"] == 3 and probes["reads"] == 6
        assert probes["stale_reads"] == 0, probes
    assert "three over one" in summary(report)
