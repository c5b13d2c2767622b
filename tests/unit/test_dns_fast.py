"""The DNS door's fast path (resolver/dns_fast.py): the question read from the bytes,
odd packets left to dnspython (never an exception), and the wire cache: the id and the
question's case patched in, byte for byte what dnspython answers, and never an answer
older than L1 (a write's invalidation, expiry, another L1 entry)."""

from __future__ import annotations

import asyncio
import time

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
from hypothesis import given, settings
from hypothesis import strategies as st

from idnode.registry.names import normalize
from idnode.resolver.codec import HandleValue, encode_values
from idnode.resolver.core import Resolver
from idnode.resolver.dns_answers import Zone
from idnode.resolver.dns_door import DnsService
from idnode.resolver.dns_fast import WireCache, parse_query
from idnode.resolver.l1 import Entry, L1Cache, Lifetimes
from idnode.resolver.stages.l1_cache import L1CacheStage
from idnode.resolver.stages.stage import Lookup, Resolution, Stage

ZONE = "id.internal."
NAME = "abc-1.166.88.id.internal."


class Registry(Stage):
    """The last stage: a dict of handle -> value list (any case), counting its lookups."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.lookups = 0

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        self.lookups += 1
        held = {normalize(k): v for k, v in self.values.items()}
        return Lifetimes(ttl=60.0).entry(held.get(q.key), _now())


def _now() -> float:
    return time.monotonic()


def url(text: str, ttl: int = 300) -> bytes:
    return encode_values([HandleValue(1, "URL", text.encode(), ttl=ttl)])


def service() -> tuple[DnsService, Registry, Resolver]:
    reg = Registry()
    core = Resolver([L1CacheStage(L1Cache(1 << 20)), reg])
    return DnsService(core, Zone.of(ZONE, "127.0.0.1")), reg, core


def query(name: str = NAME, rdtype: str = "URI", **kw: object) -> bytes:
    return dns.message.make_query(name, rdtype, **kw).to_wire()  # type: ignore[arg-type]


def ask(s: DnsService, packet: bytes) -> tuple[bytes | None, bytes | None]:
    """(the fast path's answer before asking dnspython, dnspython's answer)."""
    fast = s.wire_cache.answer(packet)
    slow = asyncio.run(s.answer(packet, 1232, "udp"))
    return fast, slow


# --- the parser -----------------------------------------------------------------------


def test_plain_queries_are_read() -> None:
    q = parse_query(query())
    assert q is not None and q.limit == 512
    p = query(use_edns=0, payload=4096)
    e = parse_query(p)
    assert e is not None and e.limit == 1232 and e.key != q.key
    assert parse_query(query(use_edns=0, payload=100)).limit == 512  # type: ignore[union-attr]
    # the case of the name does not change the key; the type does
    assert parse_query(query(NAME.upper())).key == q.key  # type: ignore[union-attr]
    assert parse_query(query(rdtype="TXT")).key != q.key  # type: ignore[union-attr]
    # DO and a client cookie are plain too (dig sends both)
    cookie = dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678")
    assert parse_query(query(use_edns=0, want_dnssec=True, options=[cookie])) is not None


def odd_queries() -> list[bytes]:
    good = query()
    m = dns.message.make_query(NAME, "URI")
    m.question.append(m.question[0])
    two = m.to_wire()
    n = dns.message.make_query(NAME, "URI")
    n.set_opcode(dns.opcode.NOTIFY)
    pad = dns.message.make_query(NAME, "URI", use_edns=0, pad=128)
    other = dns.edns.GenericOption(65001, b"x")  # type: ignore[arg-type]
    ch = dns.message.make_query(NAME, "TXT", rdclass="CH")
    resp = dns.message.make_response(dns.message.make_query(NAME, "URI")).to_wire()
    compressed = good[:12] + b"\xc0\x0c" + good[-4:]
    return [
        b"",
        good[:11],
        good[:-1],
        good + b"\x00",
        two,
        n.to_wire(),
        pad.to_wire(),
        query(use_edns=0, options=[other]),
        query(use_edns=1),
        ch.to_wire(),
        resp,
        compressed,
        good[:2] + b"\x03\x00" + good[4:],  # TC set, and a rcode in a query
        b"\xff" * 40,
    ]


def test_odd_packets_fall_back() -> None:
    for p in odd_queries():
        assert parse_query(p) is None, p


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 60))
def test_the_parser_never_raises(junk: bytes, cut: int) -> None:
    parse_query(junk)
    good = query(use_edns=0)
    mutated = bytearray(good)
    for i, b in enumerate(junk[:20]):
        mutated[(cut + i * 7) % len(mutated)] = b
    parse_query(bytes(mutated))
    parse_query(good[:cut])


# --- the cache ------------------------------------------------------------------------


def test_a_hit_is_what_dnspython_answers_with_the_id_and_case_patched() -> None:
    s, reg, _ = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    first = query()
    fast, slow = ask(s, first)
    assert fast is None and slow is not None  # the first is dnspython's, and kept
    assert reg.lookups == 1
    for name in (NAME, "ABC-1.166.88.Id.InTeRnAl."):
        for rd in (True, False):
            m = dns.message.make_query(name, "URI")
            if not rd:
                m.flags &= ~dns.flags.RD
            p = m.to_wire()
            hit = s.wire_cache.answer(p)
            assert hit is not None
            assert hit == asyncio.run(s.answer(p, 1232, "udp"))  # byte for byte
            r = dns.message.from_wire(hit)
            assert r.id == m.id and r.question[0].name.to_text() == name
            assert r.answer[0].name.to_text() == name
            assert bool(r.flags & dns.flags.RD) == rd
    assert reg.lookups == 1  # every later one from L1 or the wire cache


def test_edns_and_sizes_are_kept_apart() -> None:
    s, reg, _ = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    ask(s, query())
    e = query(use_edns=0, payload=1232)
    assert s.wire_cache.answer(e) is None  # kept without EDNS: no OPT in it
    ask(s, e)
    hit = s.wire_cache.answer(e)
    assert hit is not None and dns.message.from_wire(hit).payload == 1232
    # an answer bigger than the client's buffer is left to dnspython (it truncates)
    big = encode_values([HandleValue(i, "URL", b"https://e.com/" + b"x" * 150) for i in range(5)])
    reg.values["88.166/big"] = big
    p = query("big.166.88.id.internal.", use_edns=0, payload=1232)
    ask(s, p)
    assert s.wire_cache.answer(p) is not None
    small = query("big.166.88.id.internal.", use_edns=0, payload=512)
    assert s.wire_cache.answer(small) is None
    _fast, slow = ask(s, small)
    assert slow is not None and dns.message.from_wire(slow).flags & dns.flags.TC


def test_nodata_nxdomain_and_the_apex_are_kept() -> None:
    s, reg, _ = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    for p in (query(rdtype="A"), query(ZONE, "SOA"), query(ZONE, "NS")):
        ask(s, p)
        hit = s.wire_cache.answer(p)
        assert hit is not None and dns.message.from_wire(hit).rcode() == dns.rcode.NOERROR
    # NXDOMAIN of a name that could be a prefix's subtree is not kept (the homed
    # prefixes are not an L1 entry to check); REFUSED never is
    for p in (query("nothing.166.88.id.internal."), query("x.example.")):
        ask(s, p)
        assert s.wire_cache.answer(p) is None


def test_a_write_changes_the_next_answer_at_once() -> None:
    s, reg, core = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    p = query()
    ask(s, p)
    assert s.wire_cache.answer(p) is not None
    reg.values["88.166/abc-1"] = url("https://example.com/two")
    asyncio.run(core.invalidate(["88.166/ABC-1"]))  # what a registration does
    fast, slow = ask(s, p)
    assert fast is None and slow is not None
    assert dns.message.from_wire(slow).answer[0][0].target == b"https://example.com/two"
    hit = s.wire_cache.answer(p)  # and the new answer is kept
    assert hit is not None and dns.message.from_wire(hit).answer[0][0].target.endswith(b"two")


def test_an_l1_refill_is_not_the_entry_the_answer_was_made_from() -> None:
    s, reg, core = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    p = query()
    ask(s, p)
    # another L1 entry for the handle (a refill after an invalidation heard from
    # another worker): the wire cache does not serve, even with the same values
    l1 = core.stages[0]
    assert isinstance(l1, L1CacheStage)
    l1.cache.put(normalize("88.166/abc-1"), Lifetimes().entry(reg.values["88.166/abc-1"], _now()))
    assert s.wire_cache.answer(p) is None
    l1.forget_all()
    assert s.wire_cache.answer(p) is None


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_entries_die_at_their_ttl_and_the_lru_is_bounded() -> None:
    entry = Entry(b"x", True, 0.0)
    current: dict[str, Entry] = {"h": entry}
    clock = Clock()
    c = WireCache(current.get, max_bytes=3000, clock=clock)
    p = query()
    wire = asyncio.run(service()[0].answer(p, 1232, "udp"))
    assert wire is not None
    assert c.put(p, wire, 30, (("h", entry),), lambda: None)
    clock.now += 29
    assert c.answer(p) is not None
    clock.now += 1
    assert c.answer(p) is None and len(c) == 0
    assert not c.put(p, wire, 0, (), lambda: None)  # a TTL of 0 is never kept
    # Made from an entry L1 no longer holds: a refill (a later expiry), or other values.
    assert not c.put(p, wire, 30, (("h", Entry(b"x", True, 1.0)),), lambda: None)
    assert not c.put(p, wire, 30, (("h", Entry(b"y", True, 0.0)),), lambda: None)
    assert not c.put(query("other.166.88.id.internal."), wire, 30, (), lambda: None)
    for i in range(20):
        q = query(f"n{i}.166.88.id.internal.")
        w = q[:2] + b"\x84\x00" + q[4:]  # a response with the same question
        assert c.put(q, w, 30, (), lambda: None)
    assert c.bytes_used <= 3000 and 0 < len(c) < 20
    assert c.answer(query("n19.166.88.id.internal.")) is not None  # the newest stay
    assert c.answer(query("n0.166.88.id.internal.")) is None


def test_odd_packets_are_answered_by_dnspython_and_not_kept() -> None:
    s, reg, _ = service()
    reg.values["88.166/abc-1"] = url("https://example.com/one")
    rcodes = set()
    for p in odd_queries():
        reply = asyncio.run(s.answer(p, 1232, "udp"))  # never raises
        if reply is not None and len(reply) >= 12:
            rcodes.add(reply[3] & 0xF)
    assert {dns.rcode.FORMERR, dns.rcode.NOTIMP} <= rcodes
    assert len(s.wire_cache) == 0
