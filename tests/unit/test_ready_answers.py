"""The table of ready answers on its own: keys without the request id and expiration,
the bound, and what the garbage collector sees."""

from __future__ import annotations

import gc
from typing import cast

from idnode.resolver.ready_answers import (
    MAX_REQUEST,
    ReadyAnswers,
    cost,
    reply_for,
    request_key,
)


def message(rid: int, exp: int, rest: bytes, header: bytes = b"\x00" * 4) -> bytes:
    # Not a real message: the table reads the envelope's request id (bytes 8..11), the
    # header's serial/recursion/reserved (32..35) and expiration (36..39).
    head = b"\x02\x0a\x00\x00" + b"\x00" * 4 + rid.to_bytes(4, "big") + b"\x00" * 8
    return head + b"\x00" * 12 + header + exp.to_bytes(4, "big") + b"\x00" * 4 + rest


def request(rid: int, handle: bytes = b"88.166.1001/A", exp: int = 0) -> bytes:
    return message(rid, exp, handle)


def reply(rid: int, body: bytes = b"answer", exp: int = 0) -> bytes:
    return message(rid, exp, body)


def test_a_request_finds_its_answer_under_any_request_id_and_expiration() -> None:
    t = ReadyAnswers(1 << 20)
    values = b"values"
    t.put(request(1), "88.166.1001/a", values, reply(1), "88.166.1001", 1)
    got = t.get(request(77))
    assert got is not None
    assert got[0] == "88.166.1001/a" and got[1] is values
    assert got[3] == "88.166.1001" and got[4] == 1
    assert reply_for(got, request(77)) == reply(77)  # the new id spliced in, all else kept
    # The expiration (the Java library sets it from the clock) is spliced in too.
    got = t.get(request(78, exp=1_800_000_000))
    assert got is not None
    assert reply_for(got, request(78, exp=1_800_000_000)) == reply(78, exp=1_800_000_000)
    assert t.get(request(77, b"88.166.1001/B")) is None  # another handle: another key
    # The site serial, recursion count and reserved byte do not reach the answer: a
    # request differing only there is the same request.
    assert t.get(message(5, 0, b"88.166.1001/A", header=b"\xff\xff\x03\x00")) is not None


def test_past_the_bound_the_oldest_answers_go_first() -> None:
    one = cost(request_key(request(1, b"h/0")), "k", reply(1), b"vv")
    t = ReadyAnswers(3 * one)
    for i in range(3):
        t.put(request(1, b"h/%d" % i), "k", b"vv", reply(1), "h", 1)
    assert len(t) == 3 and t.bytes_used == 3 * one and t.evicted == 0
    t.put(request(1, b"h/9"), "k", b"vv", reply(1), "h", 1)
    assert len(t) == 3 and t.bytes_used == 3 * one and t.evicted == 1
    assert t.get(request(5, b"h/0")) is None  # the oldest went
    assert all(t.get(request(5, b"h/%d" % i)) is not None for i in (1, 2, 9))


def test_the_values_an_answer_holds_alive_count_against_the_bound() -> None:
    t = ReadyAnswers(1 << 20)
    t.put(request(1), "k", None, reply(1), "p", 100)
    small = t.bytes_used
    t.put(request(1), "k", b"v" * 5000, reply(1), "p", 1)  # replaces it: counted once
    assert len(t) == 1 and t.bytes_used == small + 5000


def test_kept_answers_are_left_alone_by_the_collector() -> None:
    """A NamedTuple (a tuple subclass) stays tracked, so every full collection would
    walk the whole table (the pauses gc_pauses.py and l1.py are about)."""
    t = ReadyAnswers(1 << 20)
    t.put(request(1), "k", b"values", reply(1), "p", 1)
    got = t.get(request(2))
    gc.collect()
    assert got is not None and not gc.is_tracked(got)


def test_what_is_not_kept() -> None:
    t = ReadyAnswers(1 << 20)
    long = request(1, b"x" * MAX_REQUEST)
    t.put(long, "k", None, reply(1), "p", 100)
    assert len(t) == 0 and t.get(long) is None  # too long to be worth a key
    view = bytearray(request(1))
    t.put(bytes(view), "k", None, reply(1), "p", 100)
    assert t.get(cast(bytes, view)) is None  # only bytes are looked up
    t.put(request(2)[:40], "k", None, reply(2), "p", 100)
    assert t.get(request(2)[:40]) is None  # shorter than a header: no expiration to splice
    off = ReadyAnswers(0)
    off.put(request(1), "k", None, reply(1), "p", 100)
    assert len(off) == 0 and off.get(request(1)) is None  # ready_answers_mb 0: off
    small = ReadyAnswers(10)
    small.put(request(1), "k", None, reply(1), "p", 100)
    assert len(small) == 0 and small.bytes_used == 0  # one answer over the whole bound
