"""The table of ready answers on its own: keys without the request id, the bound."""

from __future__ import annotations

from idnode.resolver.ready_answers import MAX_REQUEST, OVERHEAD, ReadyAnswers, reply_for


def message(rid: int, exp: int, rest: bytes) -> bytes:
    # Not a real message: the table reads only the envelope's request id (bytes 8..11)
    # and the header's expiration (bytes 36..39).
    head = b"\x02\x0a\x00\x00" + b"\x00" * 4 + rid.to_bytes(4, "big") + b"\x00" * 8
    return head + b"\x00" * 16 + exp.to_bytes(4, "big") + b"\x00" * 4 + rest


def request(rid: int, handle: bytes = b"88.166.1001/A", exp: int = 0) -> bytes:
    return message(rid, exp, handle)


def reply(rid: int, body: bytes = b"answer", exp: int = 0) -> bytes:
    return message(rid, exp, body)


def test_a_request_finds_its_answer_under_any_request_id() -> None:
    t = ReadyAnswers(1 << 20)
    values = b"values"
    t.put(request(1), "88.166.1001/a", values, reply(1), "88.166.1001", 1)
    got = t.get(request(77))
    assert got is not None
    assert got.values is values and got.key == "88.166.1001/a"
    assert got.prefix == "88.166.1001" and got.rc == 1
    assert reply_for(got, request(77)) == reply(77)  # the new id spliced in, all else kept
    # The expiration (the Java library sets it from the clock) is spliced in too.
    got = t.get(request(78, exp=1_800_000_000))
    assert got is not None
    assert reply_for(got, request(78, exp=1_800_000_000)) == reply(78, exp=1_800_000_000)
    assert t.get(request(77, b"88.166.1001/B")) is None  # another handle: another key


def test_the_table_starts_again_when_full_and_counts_it() -> None:
    one = len(request(1, b"h/0")) - 8 + len(reply(1)) + OVERHEAD
    t = ReadyAnswers(3 * one)
    for i in range(3):
        t.put(request(1, b"h/%d" % i), "k", None, reply(1), "h", 100)
    assert len(t) == 3 and t.bytes_used == 3 * one and t.restarts == 0
    t.put(request(1, b"h/9"), "k", None, reply(1), "h", 100)
    assert len(t) == 1 and t.bytes_used == one and t.restarts == 1
    assert t.get(request(5, b"h/0")) is None and t.get(request(5, b"h/9")) is not None


def test_replacing_an_answer_does_not_count_it_twice() -> None:
    t = ReadyAnswers(1 << 20)
    t.put(request(1), "k", b"v1", reply(1, b"old"), "p", 1)
    used = t.bytes_used
    t.put(request(2), "k", b"v2", reply(2, b"new"), "p", 1)
    assert len(t) == 1 and t.bytes_used == used
    got = t.get(request(3))
    assert got is not None and reply_for(got, request(3)) == reply(3, b"new")


def test_what_is_not_kept() -> None:
    t = ReadyAnswers(1 << 20)
    long = request(1, b"x" * MAX_REQUEST)
    t.put(long, "k", None, reply(1), "p", 100)
    assert len(t) == 0 and t.get(long) is None  # too long to be worth a key
    view = bytearray(request(1))
    t.put(bytes(view), "k", None, reply(1), "p", 100)
    assert t.get(view) is None  # type: ignore[arg-type]  # only bytes are looked up
    off = ReadyAnswers(0)
    off.put(request(1), "k", None, reply(1), "p", 100)
    assert len(off) == 0 and off.get(request(1)) is None  # ready_answers_mb 0: off
    t.put(request(2)[:40], "k", None, reply(2), "p", 100)
    assert t.get(request(2)[:40]) is None  # shorter than a header: no expiration to splice
    small = ReadyAnswers(10)
    small.put(request(1), "k", None, reply(1), "p", 100)
    assert len(small) == 0 and small.bytes_used == 0  # one answer over the whole bound
