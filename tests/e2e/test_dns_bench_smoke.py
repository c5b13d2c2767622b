"""The DNS benchmark (loadtest/dns_bench.py) runs end to end for a second: dnsperf
against a node and against the echo, a report of the right shape, every answer NOERROR.
It asserts no rate: a figure is the benchmark's to report, not a test's to expect."""

from __future__ import annotations

import shutil

import pytest

from idnode.loadtest.dns_bench import DnsBenchConfig, names, parse_dnsperf, run, summary

pytestmark = pytest.mark.e2e

SAMPLE = """
Statistics:

  Queries sent:         1200
  Queries completed:    1198 (99.83%)
  Queries lost:         2 (0.17%)

  Response codes:       NOERROR 1190 (99.33%), NXDOMAIN 8 (0.67%)
  Average packet size:  request 52, response 130
  Run time (s):         1.001000
  Queries per second:   1196.803197

  Average Latency (s):  0.000345 (min 0.000050, max 0.001000)
  Latency StdDev (s):   0.000100
"""


def test_dnsperf_output_is_read() -> None:
    got = parse_dnsperf(SAMPLE)
    assert got["sent"] == 1200 and got["completed"] == 1198 and got["lost"] == 2
    assert got["qps"] == pytest.approx(1196.803197)
    assert got["latency_avg_s"] == pytest.approx(0.000345)
    assert got["latency_max_s"] == pytest.approx(0.001)
    assert got["rcodes"] == {"NOERROR": 1190, "NXDOMAIN": 8}
    assert all(n.endswith(".id.internal.") for n in names(50)) and len(names(50)) == 50


def test_a_short_run_reports_node_and_echo() -> None:
    if shutil.which("dnsperf") is None:
        pytest.skip("dnsperf is not installed (scripts/test installs it)")
    report = run(DnsBenchConfig(handles=50, seconds=1, clients=1, outstanding=20))
    node, echo = report["node"], report["ceiling"]
    assert report["names"] == 50 and report["queries_in_file"] == 100
    for side in (node, echo):
        assert side["completed"] > 0 and side["qps"] > 0
        assert set(side["rcodes"]) == {"NOERROR"}
    assert report["ratio_to_ceiling"] is not None and report["ratio_to_ceiling"] > 0
    assert "queries/s" in summary(report)
