"""UDP multi-packet split and reassembly: order, duplicates, bounds on memory and time."""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from idnode.resolver.codec import (
    HandleValue,
    Message,
    ProtocolError,
    Reassembler,
    ResolutionResponse,
    decode,
    encode,
    split_datagrams,
)
from idnode.resolver.codec.message import decode_envelope


def big_message(size_hint: int, rid: int = 7) -> bytes:
    values = (HandleValue(1, "DESC", b"d" * size_hint),)
    return encode(
        Message(
            op_code=1,
            body=ResolutionResponse("88.166.1/x", values),
            response_code=1,
            request_id=rid,
        )
    )


def test_a_small_message_is_one_datagram_and_passes_straight_through() -> None:
    wire = big_message(10)
    assert split_datagrams(wire) == [wire]
    r = Reassembler()
    assert r.feed("peer", wire, 0.0) == wire
    assert len(r) == 0


@settings(max_examples=200)
@given(st.integers(0, 5000), st.randoms(use_true_random=False), st.integers(0, 3))
def test_reassembly_in_any_order_with_duplicates(size: int, rnd: random.Random, dups: int) -> None:
    wire = big_message(size)
    grams = split_datagrams(wire)
    assert all(len(g) <= 512 for g in grams)
    assert b"".join(g[20:] for g in grams) == wire[20:]
    stream = grams + [rnd.choice(grams) for _ in range(dups if len(grams) > 1 else 0)]
    rnd.shuffle(stream)
    r = Reassembler()
    done = [m for g in stream if (m := r.feed(("127.0.0.1", 1), g, 0.0)) is not None]
    assert done == [wire]
    assert decode(done[0]).body == decode(wire).body
    assert len(r) == 0 and r.buffered_bytes == 0


def test_a_late_duplicate_after_completion_is_ignored_until_expiry() -> None:
    wire = big_message(1000)
    grams = split_datagrams(wire)
    r = Reassembler(timeout=5.0)
    assert [r.feed("p", g, 0.0) for g in grams][-1] == wire
    assert r.feed("p", grams[0], 1.0) is None
    assert len(r) == 0  # no partial message was opened for it
    r.expire(now=10.0)
    assert r.feed("p", grams[0], 10.0) is None and len(r) == 1  # a new exchange


def test_messages_of_two_peers_with_the_same_request_id_do_not_mix() -> None:
    a, b = big_message(1500, rid=1), big_message(1600, rid=1)
    ga, gb = split_datagrams(a), split_datagrams(b)
    r = Reassembler()
    out = []
    for x, y in zip(ga, gb, strict=False):
        out += [r.feed("A", x, 0.0), r.feed("B", y, 0.0)]
    out += [r.feed("B", y, 0.0) for y in gb[len(ga) :]]
    assert [m for m in out if m] == [a, b]


def test_incomplete_messages_expire() -> None:
    grams = split_datagrams(big_message(3000))
    r = Reassembler(timeout=2.0)
    assert r.feed("p", grams[0], now=10.0) is None
    assert r.expire(now=11.0) == 0 and len(r) == 1
    assert r.expire(now=12.5) == 1 and len(r) == 0 and r.buffered_bytes == 0
    assert r.dropped == 1


def test_per_peer_bound_drops_the_oldest() -> None:
    r = Reassembler(max_pending_per_client=2)
    for rid in (1, 2, 3):
        assert r.feed("p", split_datagrams(big_message(2000, rid))[0], 0.0) is None
    assert len(r) == 2 and r.dropped == 1
    # the first request is gone: its remaining datagrams start it over, never complete it early
    rest = split_datagrams(big_message(2000, 1))[1:]
    assert all(r.feed("p", g, 0.0) is None for g in rest)


def test_global_byte_bound() -> None:
    r = Reassembler(max_bytes=10_000)
    for rid in range(20):
        for gram in split_datagrams(big_message(9000, rid))[:-1]:  # all but the last
            r.feed(("peer", rid), gram, 0.0)
            assert r.buffered_bytes <= 10_000
    assert r.dropped > 0


def test_inconsistent_datagrams_are_refused() -> None:
    grams = split_datagrams(big_message(2000))
    r = Reassembler()
    with pytest.raises(ProtocolError, match="carries"):
        r.feed("p", grams[0][:-1], 0.0)  # a short middle chunk
    bad_seq = bytearray(grams[0])
    bad_seq[12:16] = (99).to_bytes(4, "big")
    with pytest.raises(ProtocolError, match="sequence"):
        r.feed("p", bytes(bad_seq), 0.0)
    r.feed("p", grams[0], 0.0)
    other = split_datagrams(big_message(3000))[1]
    with pytest.raises(ProtocolError, match="disagree"):
        r.feed("p", other, 0.0)
    assert len(r) == 0


def test_every_envelope_of_a_split_is_consistent() -> None:
    grams = split_datagrams(big_message(4000, rid=99))
    envs = [decode_envelope(g) for g in grams]
    assert [e.sequence for e in envs] == list(range(len(grams)))
    assert {e.message_length for e in envs} == {len(big_message(4000)) - 20}
    assert not any(e.truncated for e in envs)


class CountingTable(OrderedDict[Any, Any]):
    """The reassembly table, counting the keys anything walks through: a scan of the
    table shows as thousands of keys visited for one datagram."""

    visited = 0

    def __iter__(self) -> Iterator[Any]:
        for key in super().__iter__():
            CountingTable.visited += 1
            yield key


def test_a_client_at_its_limit_costs_o1_not_a_scan_of_the_table() -> None:
    # 8,000 unfinished messages of other clients, then one client past its limit:
    # each new message of it drops its own oldest without walking the others.
    r = Reassembler(max_pending_per_client=4, max_pending=100_000, max_bytes=64 << 20)
    table: CountingTable = CountingTable()
    r._pending = table  # the one table every step goes through
    first = split_datagrams(big_message(1000, 0))[0]
    for n in range(8000):
        r.feed((f"10.0.{n // 250}.{n % 250}", 1000), first, 0.0)
    assert len(r) == 8000
    CountingTable.visited = 0
    for rid in range(200):
        gram = split_datagrams(big_message(1000, rid))[0]
        r.feed(("192.0.2.1", 5000 + rid), gram, 0.0, client="192.0.2.1")
    assert r.pending_of("192.0.2.1") == (4, 4 * 492)
    assert r.dropped == 196
    # A scan visits about 8,000 keys per datagram; O(1) bookkeeping visits none here.
    assert CountingTable.visited <= 200, CountingTable.visited


def test_the_client_bound_holds_whatever_ports_it_sends_from() -> None:
    r = Reassembler(max_pending_per_client=8, max_bytes_per_client=3000)
    for rid in range(100):
        gram = split_datagrams(big_message(2000, rid))[0]
        r.feed(("198.51.100.7", 1024 + rid), gram, float(rid), client="198.51.100.7")
        count, size = r.pending_of("198.51.100.7")
        assert count <= 8 and size <= 3000
    assert r.clients == 1 and len(r) <= 8


def test_total_bounds_in_messages_and_bytes_hold_for_many_clients() -> None:
    r = Reassembler(max_pending=500, max_bytes=200_000)
    for n in range(5000):
        for gram in split_datagrams(big_message(1500, n))[:2]:
            r.feed((f"203.0.113.{n % 200}", n), gram, 0.0, client=n)
        assert len(r) <= 500 and r.buffered_bytes <= 200_000
    assert r.dropped >= 4500
    # the oldest went first: the newest message is still there, and completes
    for gram in split_datagrams(big_message(1500, 4999))[2:]:
        out = r.feed((f"203.0.113.{4999 % 200}", 4999), gram, 0.0, client=4999)
    assert out == big_message(1500, 4999)


def test_a_message_larger_than_a_byte_bound_is_dropped_not_kept() -> None:
    r = Reassembler(max_bytes_per_client=1000)
    grams = split_datagrams(big_message(3000))
    assert [r.feed("p", g, 0.0) for g in grams] == [None] * len(grams)
    assert r.pending_of("p")[1] <= 1000 and r.buffered_bytes <= 1000
