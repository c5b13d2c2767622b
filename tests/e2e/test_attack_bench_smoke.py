"""The attack benchmark runs end to end: a few attacks for about a second each, with few
probes (a smoke run: structure and facts, never times)."""

from __future__ import annotations

import json

import pytest

from tests.e2e.node_process import run_module

pytestmark = pytest.mark.e2e

ATTACKS = ("udp_reassembly", "udp_amplification", "guess_rest")


def test_attack_bench_smoke() -> None:
    p = run_module(
        "idnode.loadtest.attack_bench",
        "--attacks",
        ",".join(ATTACKS),
        "--seconds",
        "1",
        "--probes",
        "5",
        "--json",
        timeout=180,
    )
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["node"]["exit_code"] == 0
    rows = report["attacks"]
    assert [r["attack"] for r in rows] == list(ATTACKS)
    for r in rows:
        assert r["alive"] and r["workers_unchanged"], r
        assert "attacker_error" not in r["facts"], r["facts"]
        for phase in ("baseline", "during"):
            for door in ("udp", "tcp", "rest"):
                got = r[phase][door]
                assert got["answered"] >= 1, (r["attack"], phase, door, got)
                assert got["p50_ms"] > 0 and got["p99_ms"] >= got["p50_ms"]
        rss = r["rss_mib"]
        assert rss["before"] > 0 and rss["after"] > 0, rss
        assert rss["peak"] >= rss["before"], rss
    facts = {r["attack"]: r["facts"] for r in rows}
    assert facts["udp_reassembly"]["datagrams_sent"] > 0
    amplified = facts["udp_amplification"]
    assert amplified["big_64kb"]["requests"] > 0 and amplified["big_64kb"]["bytes_in"] > 0
    rest = facts["guess_rest"]
    assert rest["guesses"] >= 1 and sum(rest["answers"].values()) <= rest["guesses"]
