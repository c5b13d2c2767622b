"""The load generators' per-second series: each answer lands in the second it was sent
(or due), slow answers are counted per second, and several generators' series merge by
wall-clock second, so one stall shows as one bad second, not as a run-long tail."""

from __future__ import annotations

from pathlib import Path

from idnode.loadtest.generators import Tally, merge
from idnode.loadtest.run import _worst_second


def tally_at(start_unix: float, answers: list[tuple[float, float]]) -> Tally:
    """A tally whose phase began at ``start_unix``, with (sent after start s, latency s)
    answers."""
    t = Tally()
    t.start_unix = start_unix
    for after, latency in answers:
        t.sent += 1
        t.done(latency, 1, t.start + after)
    return t


def test_answers_land_in_the_second_they_were_sent() -> None:
    t = tally_at(1000.0, [(0.1, 0.0002), (0.9, 0.002), (1.5, 0.3), (1.6, 0.0001), (3.2, 0.006)])
    r = t.result(4.0, False)
    assert r["series"] == {
        "0": [2, 1, 0, 2000],
        "1": [2, 1, 1, 300_000],
        "3": [1, 1, 1, 6000],
    }
    # the fast answers of a second leave its worst at 0: only slow ones are tracked
    assert tally_at(0.0, [(0.0, 0.0005)]).result(1.0, False)["series"] == {"0": [1, 0, 0, 0]}


def test_generators_merge_by_wall_clock_second() -> None:
    a = tally_at(1000.0, [(0.5, 0.0001), (1.5, 0.2)])
    b = tally_at(1001.0, [(0.5, 0.007), (1.5, 0.0001)])  # started a second later
    merged = merge([a.result(2.0, False), b.result(2.0, False)])
    assert [
        (s["second"], s["answered"], s["over_5ms"], s["max_ms"]) for s in merged["per_second"]
    ] == [
        (0, 1, 0, 0.0),
        (1, 2, 2, 200.0),
        (2, 1, 0, 0.0),
    ]
    assert merged["per_second"][1]["unix"] == 1001.0
    assert merged["answered"] == 4


def test_the_summary_names_the_worst_second() -> None:
    t = tally_at(0.0, [(0.1, 0.0001), (2.2, 0.28), (2.3, 0.0001), (4.0, 0.006)])
    line = _worst_second(merge([t.result(5.0, False)])["per_second"])
    assert line == "; over 5 ms in 2 of 3 s, worst second 2 (max 280.0 ms, 1 of 2 over 5 ms)"
    assert (
        _worst_second(merge([tally_at(0.0, [(0.1, 0.0001)]).result(1.0, False)])["per_second"])
        == ""
    )
    # results from before the series existed (a saved report) merge to an empty series
    old = t.result(5.0, False)
    del old["series"], old["start_unix"]
    assert merge([old])["per_second"] == []


def test_each_point_draws_its_own_keys() -> None:
    """A point replaying the last one's key sequence starts on that point's L1 hits and
    ends on a burst of cold misses; each point's generators draw their own."""
    from idnode.loadtest.generators import WARM_SEED
    from idnode.loadtest.run import RunConfig, Target, _jobs

    cfg = RunConfig(mode="open", generators=2, mix="B")
    target = Target("127.0.0.1", 1, 2, 3)
    seeds = [
        {j.seed for j in _jobs(cfg, "udp", target, 1000.0, False, "key", 100, index)}
        for index in range(3)
    ]
    assert all(len(s) == 3 for s in seeds)  # two readers and the updates, all distinct
    assert not (seeds[0] & seeds[1]) and not (seeds[1] & seeds[2]) and not (seeds[0] & seeds[2])
    assert max(max(s) for s in seeds) < WARM_SEED  # warm-up sequences are others again


def test_an_attached_node_without_a_registry_url_needs_its_size_and_populates_nothing(
    tmp_path: Path,
) -> None:
    """--attach drives a node that has its own registry: the harness populates no
    throwaway one (a 10M SQLite took minutes, and its writeback slowed the node), asks
    for --registry-size, and refuses what needs the node's registry (an API key for
    updates, the DNS door's node)."""
    import pytest

    from idnode.loadtest.run import RunConfig, prepare_registry

    attached = "127.0.0.1:2641:8000:8001"
    with pytest.raises(ValueError, match="--registry-size"):
        RunConfig(attach=attached).check()
    with pytest.raises(ValueError, match="--database-url"):
        RunConfig(attach=attached, registry_size=1000, mix="A").check()
    cfg = RunConfig(attach=attached, registry_size=1000)
    cfg.check()
    said: list[str] = []
    url, size, facts = prepare_registry(cfg, tmp_path, said.append)
    assert (url, size) == ("", 1000) and facts["backend"] == "the attached node's"
    assert said == [] and list(tmp_path.iterdir()) == []
