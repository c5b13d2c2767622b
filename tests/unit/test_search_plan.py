"""The capacity plan with the value index (--search-index): its measured bytes per
identifier join SQL storage (not the handles partitions), and its write cost is stated."""

from __future__ import annotations

from idnode.loadtest.plan import Plan, render


def test_the_value_index_adds_its_bytes_and_states_its_write_cost() -> None:
    off = Plan(registrations=1.5e9, qps=200_000).compute()
    on = Plan(registrations=1.5e9, qps=200_000, search_index=True).compute()
    per_id = on["assumptions"]["search_index_bytes_per_identifier"]
    expected = 1.5e9 * per_id * 1.5 / 2**30  # headroom 50%
    assert abs(on["search_index_gib"] - expected) < 0.1
    assert abs(on["sql_storage_gib"] - off["sql_storage_gib"] - expected) < 0.2
    assert off["search_index_gib"] == 0 and off["write_rate_factor"] == 1.0
    assert on["write_rate_factor"] == on["assumptions"]["search_index_write_ratio"] < 1
    # The handles partitions divide the handles table only.
    assert on["cluster"]["postgres_partitions"] == off["cluster"]["postgres_partitions"]
    text = render(on)
    assert "value index" in text and "search_bench" in text
    assert "value index" not in render(off)
