"""The DNS door's fast path: a plain query answered from a wire-bytes cache, no dnspython.

dnspython's parse-and-build costs about 150 µs a query; a hot name's answer never
changes between writes, so the door keeps the answer's wire bytes per question and
answers a repeat by patching them: the id, the RD bit, and the question exactly as
received (its case too: 0x20). Anything unusual (several questions, compression in the
question, an opcode other than QUERY, a class other than IN, records other than one
OPT, EDNS padding or unknown options, trailing bytes) is left to the dnspython path,
which also fills the cache.

Coherence: an entry remembers, for each handle its answer was rendered from, the L1
entry (l1.Entry) it read; a hit asks the core for the handle's L1 entry
(Resolver.cached, synchronous) and serves only when it is still equal to that one: the
same value bytes with the same expiry time. (Equal, not the same object: L1 hands out a
new Entry on every read, see l1.Held; comparing costs little, the fields being the very
objects L1 holds.) A write drops the handle from L1 (core forget) before it is
acknowledged, and any refill has a later expiry; another worker's write makes ``cached``
answer None until this worker catches up from the feed; a core that does not trust its
caches answers None; an expired L1 entry is gone. So the wire cache can never serve what
L1 would not, with no notification to subscribe to. An entry also dies at the smallest
TTL of its records: TTLs are not decremented (an authoritative server's answers carry
the full TTL), and past that TTL the answer is rendered anew.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

UDP_PLAIN = 512  # dns_answers.UDP_PLAIN (no import: this module stays dnspython-free)
UDP_CAP = 1232  # dns_answers.UDP_CAP
OPT = 41
COOKIE = 10  # RFC 7873: dnspython checks its length, and the answer does not depend on it
ENTRY_OVERHEAD = 300  # tuple, key, dict slot, dependency tuple: a rough cost in bytes
DEFAULT_MAX_BYTES = 32 * 1024 * 1024
PARSED_MAX = 65_536  # queries remembered parsed (bytes after the id); then started over


class Question(NamedTuple):
    key: bytes  # the question's name in lower case, its type and class, EDNS or not
    end: int  # where the question ends in the packet (12 + name + 4)
    limit: int  # the largest UDP answer the client takes


def parse_query(packet: bytes) -> Question | None:
    """The one question of a plain query, read from the bytes; None for anything else
    (the dnspython path decides). Never raises."""
    n = len(packet)
    if n < 17 or n > 512:
        return None
    # QR, opcode, AA, TC: 0 (RD free); RA, Z, rcode: 0 (AD and CD free: dig sets AD)
    if packet[2] & 0xFE or packet[3] & 0xCF:
        return None
    # QDCOUNT 1, ANCOUNT 0, NSCOUNT 0, ARCOUNT 0 or 1
    if packet[4:10] != b"\x00\x01\x00\x00\x00\x00" or packet[10] or packet[11] > 1:
        return None
    pos = 12
    while True:
        if pos >= n:
            return None
        length = packet[pos]
        if length == 0:
            break
        if length > 63:  # a pointer (0xC0) or an extended label type: not here
            return None
        pos += length + 1
    pos += 1
    if pos > 12 + 255 or pos + 4 > n:
        return None
    if packet[pos + 2 : pos + 4] != b"\x00\x01":  # class IN
        return None
    end = pos + 4
    if packet[11] == 0:
        if end != n:
            return None  # trailing bytes: dnspython answers FORMERR
        edns, limit = b"\x00", UDP_PLAIN
    else:
        # OPT: root name, type 41, class = UDP size, TTL = ext-rcode, version, flags
        if end + 11 > n or packet[end] != 0 or packet[end + 1 : end + 3] != b"\x00\x29":
            return None
        size = packet[end + 3] << 8 | packet[end + 4]
        # extended rcode 0, version 0, only the DO bit among the flags
        if packet[end + 5] or packet[end + 6] or packet[end + 7] & 0x7F or packet[end + 8]:
            return None
        rdlen = packet[end + 9] << 8 | packet[end + 10]
        at = end + 11
        if at + rdlen != n:
            return None
        while at < n:  # the options: only a well-formed COOKIE
            if at + 4 > n:
                return None
            code = packet[at] << 8 | packet[at + 1]
            olen = packet[at + 2] << 8 | packet[at + 3]
            at += 4 + olen
            if at > n or code != COOKIE or not (olen == 8 or 16 <= olen <= 40):
                return None
        edns, limit = b"\x01", max(UDP_PLAIN, min(size, UDP_CAP))
    return Question(packet[12:pos].lower() + packet[pos:end] + edns, end, limit)


Dependency = tuple[str, Any]  # (handle, the l1.Entry the answer was made from)


class Cached(NamedTuple):
    wire: bytes
    expires: float  # monotonic seconds: the smallest TTL of its records
    depends: tuple[Dependency, ...]
    tally: Callable[[], None]  # the metrics counter of its rcode (bound .inc)


class WireCache:
    """Answers' wire bytes per question key: an LRU bounded in bytes."""

    def __init__(
        self,
        recall: Callable[[str], Any],
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.recall = recall  # Resolver.cached: a handle's current L1 entry, or None
        self.max_bytes = max_bytes
        self.clock = clock
        self._d: OrderedDict[bytes, Cached] = OrderedDict()
        self._bytes = 0
        # A query's bytes after its id -> its parse: a client asks the same bytes again
        # but for the id (no 0x20), and one dict lookup is cheaper than reading labels.
        # Only what parses is remembered, so junk cannot fill it; bounded all the same.
        self._parsed: dict[bytes, Question] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def answer(self, packet: bytes) -> bytes | None:
        """The answer to ``packet`` from the cache, patched; None: ask dnspython."""
        after_id = packet[2:]
        q = self._parsed.get(after_id)
        if q is None:
            q = parse_query(packet)  # what it reads never includes the id
            if q is None:
                return None
            if len(self._parsed) >= PARSED_MAX:
                self._parsed.clear()
            self._parsed[after_id] = q
        key, end, limit = q
        e = self._d.get(key)
        if e is None or not self._fresh(key, e) or len(e.wire) > limit:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        e.tally()
        wire = e.wire
        if (packet[2] ^ wire[2]) & 0x01 == 0 and packet[12:end] == wire[12:end]:
            return packet[:2] + wire[2:]  # asked as the cached one was: only the id
        # The id; the flags as cached with the query's RD (dnspython copies RD alone);
        # the counts; the question as it came (0x20); then the records, whose names
        # point at the question (compression), so they follow its case as dnspython's do.
        flags = bytes(((wire[2] & 0xFE) | (packet[2] & 0x01),))
        return packet[:2] + flags + wire[3:12] + packet[12:end] + wire[end:]

    def _fresh(self, key: bytes, e: Cached) -> bool:
        if e.expires > self.clock():
            recall = self.recall
            for handle, l1 in e.depends:
                if recall(handle) != l1:
                    break
            else:
                return True
        self._remove(key)
        return False

    def put(
        self,
        packet: bytes,
        wire: bytes,
        ttl: float,
        depends: tuple[Dependency, ...],
        tally: Callable[[], None],
    ) -> bool:
        """Keep ``wire`` (the dnspython path's answer to ``packet``) for ``ttl`` seconds
        while each handle's L1 entry is the one it was made from. False: not kept."""
        q = parse_query(packet)
        if q is None or ttl <= 0 or self.max_bytes <= 0:
            return False
        if any(self.recall(h) != l1 for h, l1 in depends):
            return False  # L1 does not hold what it was made from (not kept, or changed)
        if len(wire) < q.end or wire[12 : q.end].lower() != packet[12 : q.end].lower():
            return False  # not the question as asked: the patching would be wrong
        cost = len(q.key) + len(wire) + ENTRY_OVERHEAD
        if cost > self.max_bytes:
            return False
        self._remove(q.key)
        self._d[q.key] = Cached(wire, self.clock() + ttl, depends, tally)
        self._bytes += cost
        while self._bytes > self.max_bytes:
            k, old = self._d.popitem(last=False)
            self._bytes -= len(k) + len(old.wire) + ENTRY_OVERHEAD
        return True

    def _remove(self, key: bytes) -> None:
        old = self._d.pop(key, None)
        if old is not None:
            self._bytes -= len(key) + len(old.wire) + ENTRY_OVERHEAD

    def clear(self) -> None:
        self._d.clear()
        self._bytes = 0
        self._parsed.clear()


__all__ = ["Question", "WireCache", "parse_query"]
