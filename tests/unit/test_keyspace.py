"""The load-test key space and workloads: deterministic, bijective, skewed as promised."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idnode.loadtest.keyspace import (
    ENTERPRISES,
    Permutation,
    enterprise_of,
    handle,
    record,
    unregistered,
)
from idnode.loadtest.workloads import Workload, Zipfian
from idnode.registry.names import check_handle


@settings(max_examples=40)
@given(st.integers(1, 5000), st.integers(0, 2**32))
def test_permutation_is_a_bijection(n: int, key: int) -> None:
    p = Permutation(n, key)
    assert sorted(p(i) for i in range(n)) == list(range(n))


def test_permutation_at_the_target_scale() -> None:
    p = Permutation(1_500_000_000)
    seen = {p(i) for i in range(0, 1_500_000_000, 15_000_001)}
    assert len(seen) == 100 and all(0 <= x < 1_500_000_000 for x in seen)
    with pytest.raises(ValueError):
        p(1_500_000_000)


def test_identifiers_are_deterministic_valid_and_distinct() -> None:
    hs = [handle(i) for i in range(20_000)]
    assert len(set(hs)) == len(hs)
    for h in hs[:2000]:
        check_handle(h)
    assert handle(123_456) == handle(123_456) and record(7) == record(7)
    assert unregistered(5) not in set(hs)


def test_enterprises_are_skewed_but_all_used() -> None:
    counts = Counter(enterprise_of(i) for i in range(200_000))
    assert len(counts) > ENTERPRISES * 0.9
    top = sum(c for _, c in counts.most_common(ENTERPRISES // 10))
    assert top > 200_000 * 0.4  # the largest tenth register much more than a tenth


def test_zipfian_is_skewed_like_ycsb() -> None:
    z = Zipfian(1_000_000)
    draws = [z() for _ in range(50_000)]
    assert sum(d < 1000 for d in draws) / len(draws) > 0.4  # the top 0.1% get a large share
    assert max(draws) < 1_000_000


def test_workloads() -> None:
    w = Workload(10_000, miss_share=0.2, mix="B", seed=3)
    ops = [w.next() for _ in range(5000)]
    again = Workload(10_000, miss_share=0.2, mix="B", seed=3)
    assert [again.next() for _ in range(50)] == ops[:50]  # deterministic for a seed
    misses = sum("/NX" in h for _, h in ops)
    assert 0.1 < misses / len(ops) < 0.3
    updates = sum(op == "update" for op, _ in ops)
    assert 0 < updates / len(ops) < 0.1
    hot = Workload(10_000, distribution="hotset", seed=1)
    # the identifiers kept by rank are the ones the permutation names
    from idnode.loadtest.keyspace import handle

    fresh = Workload(10_000, distribution="hotset", seed=1)
    for _ in range(3000):
        fresh.rng.random()  # next() draws its operation first: keep the two in step
        assert hot.next()[1] == handle(fresh.perm(fresh.rank()))
    assert len({hot.next()[1] for _ in range(2000)}) < 600
    with pytest.raises(ValueError):
        Workload(10, distribution="gaussian")


def test_identifiers_kept_by_rank_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from idnode.loadtest import workloads
    from idnode.loadtest.keyspace import handle

    monkeypatch.setattr(workloads, "MEMO_MAX", 100)
    w, fresh = (Workload(10_000, distribution="uniform", seed=7) for _ in range(2))
    for _ in range(2000):
        fresh.rng.random()
        assert w.next()[1] == handle(fresh.perm(fresh.rank()))
        assert len(w._ids) <= 100


def test_fast_row_encoding_matches_the_codec() -> None:
    from idnode.loadtest.keyspace import values
    from idnode.loadtest.populate import values_wire
    from idnode.resolver.codec import encode_values

    for i in (0, 1, 999, 123_456_789):
        assert values_wire(i) == encode_values(values(i))


def test_capacity_plan_states_its_assumptions() -> None:
    from idnode.loadtest.plan import Plan, render

    r = Plan(registrations=1.5e9, qps=200_000, bytes_per_identifier=400).compute()
    assert r["resolver_cores"] >= 2 and r["sql_storage_gib"] > 500
    # Zipf 0.99 is heavy-tailed: a 64 MiB L1 cannot answer most lookups of 1.5e9 ids,
    # and answering 95% without SQL takes a large share of them in Redis
    assert 0.3 < r["l1_hit_ratio"] < 0.8 and 0.1 < r["redis_hot_share"] < 0.6
    text = render(r)
    assert "assumptions" in text and "1,500,000,000 registrations" in text
    small = Plan(registrations=1e6, qps=200_000).compute()
    assert small["l1_hit_ratio"] > r["l1_hit_ratio"]  # fewer ids: the same L1 covers more


def test_capacity_plan_shapes_the_cluster_from_memory_and_rates() -> None:
    from idnode.loadtest.plan import Plan, render

    big = Plan(registrations=1.5e9, qps=200_000).compute()["cluster"]
    # Redis memory (228 GiB at 50% headroom) in 16 GiB masters, each with a replica
    assert big["redis_masters"] >= 14 and big["redis_replicas"] == big["redis_masters"]
    assert big["redis_gib_per_master"] <= 16
    # 705 GiB of SQL in partitions of at most 16 GiB, a power of two
    parts = big["postgres_partitions"]
    assert parts & (parts - 1) == 0 and big["postgres_gib_per_partition"] <= 16
    assert big["nodes"] >= 3 and big["postgres_read_replicas"] >= 1
    # a rate-bound shape: more lookups reaching SQL need more replicas, more past L1 more
    # masters, more cores more nodes
    busy = Plan(registrations=1e6, qps=5_000_000, cache_hit_ratio=0.5).compute()["cluster"]
    assert busy["postgres_read_replicas"] > big["postgres_read_replicas"]
    assert busy["redis_masters"] > 3 and busy["nodes"] > big["nodes"]
    small = Plan(registrations=1e6, qps=1_000).compute()["cluster"]
    assert small == {**small, "nodes": 3, "redis_masters": 3, "postgres_partitions": 2}
    assert "Redis Cluster:" in render(Plan(registrations=1.5e9, qps=1).compute())


def test_zipf_model_matches_the_generator_the_load_uses() -> None:
    import random

    from idnode.loadtest.plan import harmonic, zipf_hot_set, zipf_share
    from idnode.loadtest.workloads import Zipfian

    assert abs(harmonic(200_000) - sum(i**-0.99 for i in range(1, 200_001))) < 1e-6
    assert zipf_share(10**9, 10**9) == 1.0
    n = 1_000_000
    z = Zipfian(n, rng=random.Random(3))
    ranks = [z() for _ in range(100_000)]
    for k in (1, 1000, 100_000):
        drawn = sum(1 for x in ranks if x < k) / len(ranks)
        assert abs(drawn - zipf_share(k, n)) < 0.02, k
    for target in (0.5, 0.9, 0.99):
        hot = zipf_hot_set(target, 1.5e9)
        assert zipf_share(hot, 1.5e9) >= target > zipf_share(hot - 1, 1.5e9)


def test_spliced_request_frames_are_what_the_codec_encodes() -> None:
    from idnode.loadtest.generators import handle_frames
    from idnode.loadtest.keyspace import handle
    from idnode.resolver.codec import Message, ResolutionRequest, decode, encode
    from idnode.resolver.codec.codes import OpFlag

    names = [handle(i) for i in range(50)] + ["88.166.1001/液压阀-1", "x" * 2000, "a/b"]
    flags = OpFlag.REC | OpFlag.CA | OpFlag.PO
    for name, frame in zip(names, handle_frames(names), strict=True):
        assert bytes(frame) == encode(
            Message(op_code=1, body=ResolutionRequest(name), op_flags=flags)
        ), name
        assert decode(bytes(frame)).body == ResolutionRequest(name)
    # a name drawn again shares its frame (stamped with a request id just before a send)
    again = handle_frames(["a/b", "c/d", "a/b"])
    assert again[0] is again[2] and again[0] is not again[1]


def test_cost_fits_recover_known_curves_and_refuse_degenerate_sizes() -> None:
    import math

    from idnode.loadtest.scale import fit_cost

    sizes = [1e6, 1e7, 1e8]
    log_curve = [(n, 5 + 10 * math.log10(n)) for n in sizes]
    fit = fit_cost(log_curve, [])
    assert fit is not None
    assert abs(fit["log"]["a"] - 5) < 1e-6 and abs(fit["log"]["b"] - 10) < 1e-6
    assert fit["log"]["r2"] > 0.999
    power = [(n, 0.5 * n**0.25) for n in sizes]
    fit = fit_cost(power, power)
    assert fit is not None
    assert abs(fit["power"]["k"] - 0.25) < 1e-6 and abs(fit["power"]["c"] - 0.5) < 1e-6
    assert abs(fit["us_per_lookup_at_1_5e9"]["power"] - 0.5 * 1.5e9**0.25) < 0.1
    # the same size twice (a partitioned and a plain 10M registry): no slope to fit
    assert fit_cost([(1e7, 70.0), (9_999_982, 30.0)], []) is None
    assert fit_cost([(1e7, 70.0)], []) is None


def test_the_plan_adds_node_cores_for_writes_at_the_measured_per_core_rates() -> None:
    from idnode.loadtest.plan import Plan, render

    reads_only = Plan(registrations=1.5e9, qps=100_000).compute()
    with_writes = Plan(
        registrations=1.5e9, qps=100_000, writes=8_500, batch_ids=120_000, headroom=0.5
    ).compute()
    # 8,500 / 850 + 120,000 / 12,000 = 20 core-seconds, with 50% headroom: 30 cores
    assert with_writes["of_which_for_writes"] == 30
    assert with_writes["resolver_cores"] - reads_only["resolver_cores"] in (29, 30, 31)
    assert "of which 30 for 8,500 updates/s" in render(with_writes)
    assert reads_only["of_which_for_writes"] == 0


def test_the_plan_prices_lookups_by_the_tier_that_answers_them() -> None:
    import math

    from idnode.loadtest.plan import Plan, zipf_share

    p = Plan(registrations=1.5e9, qps=100_000, headroom=0.0)
    r = p.compute()
    l1 = zipf_share(p.l1_mb_per_worker * 2**20 / p.l1_bytes_per_entry, 1.5e9, 0.99)
    # L1 hits, then Redis up to cache_hit_ratio (0.95), then the 5% that reach SQL
    seconds = (
        100_000 * l1 / p.hit_qps_per_core
        + 100_000 * (0.95 - l1) / p.miss_qps_per_core
        + 100_000 * 0.05 / p.sql_miss_qps_per_core
    )
    assert r["resolver_cores"] == math.ceil(seconds)
    assert r["lookups_reaching_sql_per_s"] == 5_000
    # SQL lookups are the dearest: at the measured rates they cost more than Redis hits
    assert p.sql_miss_qps_per_core < p.miss_qps_per_core < p.hit_qps_per_core
    # an L1 that answers more than cache_hit_ratio leaves nothing to Redis
    small = Plan(registrations=1e5, qps=100_000, headroom=0.0).compute()
    assert small["l1_hit_ratio"] == 1.0 and small["lookups_reaching_sql_per_s"] == 0
