"""How `idnode loadtest peer` folds its interleaved rounds into a door's figures, without
any server: the order rotates, each ratio is taken within a round, the medians and the
spread are those of the rounds."""

from __future__ import annotations

from typing import Any

import pytest

from idnode.loadtest.peer import PeerConfig, _order, aggregate


def _m(per_s: int, ok: bool = True) -> dict[str, Any]:
    return {"per_s": per_s, "p99_us": per_s // 10, "all_success": ok, "codes": {"1": per_s}}


def test_the_order_rotates_so_none_always_goes_first() -> None:
    servers = ("echo", "idnode", "reference")
    assert [_order(servers, k) for k in range(4)] == [
        ["echo", "idnode", "reference"],
        ["idnode", "reference", "echo"],
        ["reference", "echo", "idnode"],
        ["echo", "idnode", "reference"],
    ]


def test_ratios_are_taken_within_a_round_and_their_median_reported() -> None:
    # Round 2 ran on a busier machine: every server slower, the ratios much the same.
    rounds = [
        {"order": [], "echo": _m(1000), "idnode": _m(800), "reference": _m(600)},
        {"order": [], "echo": _m(500), "idnode": _m(410), "reference": _m(300)},
        {"order": [], "echo": _m(900), "idnode": _m(700), "reference": _m(560)},
    ]
    d = aggregate(rounds)
    assert d["ratios"]["idnode_to_reference"] == {
        "rounds": [1.333, 1.367, 1.25],
        "median": 1.333,
        "min": 1.25,
        "max": 1.367,
    }
    assert d["idnode_to_reference"] == 1.333
    assert d["ratios"]["idnode_to_echo"]["rounds"] == [0.8, 0.82, 0.778]
    assert d["idnode_to_echo"] == 0.8
    assert d["reference_to_echo"] == 0.6
    # a server's figures are those of its median round, with its p99
    assert d["idnode"] == {**_m(700), "round_index": 2}
    assert d["per_s"]["idnode"] == {"median": 700, "min": 410, "max": 800}
    assert d["all_success"] == {"echo": True, "idnode": True, "reference": True}
    assert d["rounds"] is rounds


def test_an_even_count_of_rounds_and_a_missing_server() -> None:
    rounds = [
        {"order": [], "echo": _m(1000), "idnode": _m(300)},
        {"order": [], "echo": _m(800), "idnode": _m(200, ok=False)},
    ]
    d = aggregate(rounds)
    assert d["per_s"]["idnode"] == {"median": 250, "min": 200, "max": 300}
    assert d["idnode"]["round_index"] == 1  # the lower middle one
    assert d["idnode_to_echo"] == 0.275  # the median of 0.3 and 0.25
    assert "reference" not in d and d["idnode_to_reference"] is None
    assert d["ratios"]["reference_to_echo"]["rounds"] == [None, None]
    assert d["all_success"]["idnode"] is False


def test_rounds_are_bounded() -> None:
    for rounds in (0, 11):
        with pytest.raises(ValueError, match="--rounds"):
            PeerConfig(reference_jars="x", rounds=rounds).check()
    PeerConfig(reference_jars="x", rounds=1).check()
