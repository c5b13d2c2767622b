"""`idnode loadtest peer` end to end with tiny counts: the echo, idnode and the reference
server (HANDLE.NET 7.3.1, ../shared/clients) in one loopback-only namespace, the same
generator on each in two interleaved rounds, a sample of answers checked on both. It
asserts no rate: a figure is the benchmark's to report, not a test's to expect; it asserts
the rounds' shape (every round present, the order rotated, each ratio taken within one
round, every median between its min and max)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.peer import (
    PERSISTENT_UNSUPPORTED,
    RATIOS,
    PeerConfig,
    run,
    summary,
)
from idnode.loadtest.processes import IDNODE

pytestmark = [pytest.mark.e2e, pytest.mark.bench]

JARS = Path(__file__).resolve().parents[3] / "shared" / "clients" / "cnri-7.3.1"
ROUNDS = 2


def _why_not() -> str | None:
    if not (JARS / "handle.jar").exists():
        return f"the HANDLE.NET 7.3.1 jars are not at {JARS} (a checkout beside ../shared)"
    for tool in ("java", "javac", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "a loopback-only network namespace needs root"
    if len(os.sched_getaffinity(0)) < 2:
        return "server and load need a core each"
    return None


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    why = _why_not()
    if why:
        pytest.skip(f"the reference server as a peer needs it: {why}")
    cfg = PeerConfig(
        reference_jars=str(JARS),
        handles=300,
        seconds=0.5,
        warmup=0.2,
        jit_warmup=0.5,
        window=16,
        sample=30,
        draws=3000,
        rounds=ROUNDS,
    )
    return run(cfg, say=lambda m: None)


def test_every_server_answers_on_every_door(report: dict[str, Any]) -> None:
    doors = report["doors"]
    assert set(doors) == {"udp", "tcp", "tcp1"}
    for door in ("udp", "tcp1"):
        for who in ("echo", "idnode", "reference"):
            assert doors[door][who]["answered"] > 0, (door, who)
        for who in ("idnode", "reference"):
            # every answer a generator counted was SUCCESS (code 1), none lost on TCP
            assert doors[door][who]["all_success"], (door, who, doors[door][who]["codes"])
        assert doors[door]["idnode_to_reference"] > 0
        assert doors[door]["idnode_to_echo"] > 0
    assert doors["tcp"]["idnode"]["all_success"] and doors["tcp"]["idnode_to_echo"] > 0
    # the reference server answers one request per connection: said, not measured
    assert doors["tcp"]["reference"] == {"unsupported": PERSISTENT_UNSUPPORTED}
    assert doors["tcp"]["idnode_to_reference"] is None


def test_every_door_is_measured_in_interleaved_rounds(report: dict[str, Any]) -> None:
    for door, d in report["doors"].items():
        servers = ["echo", "idnode"] if door == "tcp" else ["echo", "idnode", "reference"]
        rounds = d["rounds"]
        assert len(rounds) == ROUNDS, door
        # each round measures every server once, the order rotated: none always first
        assert [r["order"] for r in rounds] == [servers, servers[1:] + servers[:1]], door
        for r in rounds:
            assert set(r) == {"order", *servers}, door
            for who in servers:
                assert r[who]["answered"] > 0 and r[who]["all_success"], (door, who, r[who])
        for who in servers:
            per_s = [r[who]["per_s"] for r in rounds]
            spread = d["per_s"][who]
            assert spread["min"] == min(per_s) and spread["max"] == max(per_s), (door, who)
            assert spread["min"] <= spread["median"] <= spread["max"], (door, who)
            # the server's figures are those of one round, its median one (the lower of two)
            assert d[who]["per_s"] == min(per_s), (door, who)
            assert d[who] == {
                **rounds[d[who]["round_index"]][who],
                "round_index": d[who]["round_index"],
            }
            assert d["all_success"][who] is True
        for name, a, b in RATIOS:
            got = d["ratios"][name]
            if b not in servers or a not in servers:
                assert got == {"rounds": [None] * ROUNDS, "median": None, "min": None, "max": None}
                assert d[name] is None
                continue
            # each ratio is of two figures from the same round
            want = [round(r[a]["per_s"] / r[b]["per_s"], 3) for r in rounds]
            assert got["rounds"] == want, (door, name)
            assert got["min"] == min(want) and got["max"] == max(want), (door, name)
            assert got["min"] <= got["median"] <= got["max"], (door, name)
            assert d[name] == got["median"], (door, name)
    text = summary(report)
    assert text.count(f"median of {ROUNDS} rounds") == 3, text
    assert "(min–max over the rounds)" in text


def test_both_servers_give_the_registry_values(report: dict[str, Any]) -> None:
    assert report["sample_size"] == 30
    assert report["sample_idnode"] == {"udp": [], "tcp": [], "tcp1": []}
    assert report["sample_reference"] == {"udp": [], "tcp1": []}
    assert report["answers_agree"] is True
    text = summary(report)
    assert "idnode/reference" in text and "all SUCCESS with the registry's values" in text


def test_missing_jars_are_a_clear_usage_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no handle\.jar in"):
        run(PeerConfig(reference_jars=str(tmp_path)))
    p = subprocess.run(
        [IDNODE, "loadtest", "peer", "--reference-jars", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 2, p.stderr
    assert "no handle.jar in" in p.stderr and "--reference-jars" in p.stderr
