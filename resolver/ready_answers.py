"""Answers to L1-hit resolutions, kept ready to send but for two fields.

An answer built from an L1 entry is a function of two things only:
- the request's bytes: version, envelope flags, session, request id, opFlags,
  expiration, the handle and its index and type filters; and
- the entry's values (``all_public``, the only other field ``answer`` reads, is
  computed from them).

Of the request, the request id (envelope bytes 8..11) and the expiration (message
bytes 36..39) only come back unchanged in the answer, at the same offsets; and they are
what changes between two askings of the same thing (the HANDLE.NET library sets the
expiration from the clock). The header's site serial, recursion count and reserved
byte (bytes 32..35) do not reach the answer at all (it carries the node's serial and
zeros). So the request's other bytes find the answer given last time, and the new
request's id and expiration are spliced into it. The node's own site serial is baked
into every kept answer: it is fixed for the life of the HandleService.

The answer is still good while L1 holds the *same values object* for the handle:
holding it keeps the object alive, so no other values can be the same object; an
invalidation, a refill or an expiry in L1 replaces or drops it.

On a hit, the Handle doors skip decoding the request, filtering the values and
encoding the answer. That was about a third of an L1 hit's CPU (cProfile of the UDP
door, in process).

Only answers that are safe to replay are kept: no session, not encrypted, not
certified, no request digest (RD: it hashes the header, expiration included), not
asked on a logged-in connection. The caller checks; the key holds the envelope's flags
and session and the opFlags, so a request that differs there never matches.

Memory is bounded in bytes, counting the values each answer holds alive (L1 may have
dropped them): past the bound the oldest answers go first, a few at a time, so a
client sending endless variants of one request (letter case, filters) pushes out
older answers but never makes the table stop the loop to empty itself. Held as plain
tuples of atomic fields, the answers are left alone by the garbage collector's full
passes (see l1.py).
"""

from __future__ import annotations

from collections import OrderedDict

from . import metrics

MAX_REQUEST = 1024  # longer requests (long handles, many filters) are not kept
MIN_REQUEST = 44  # envelope and header: a shorter message has no expiration to splice
# Bytes a kept answer costs beyond the lengths of its keys, reply and held values: the
# tuples, the ordered slot, the objects' headers (tracemalloc over 20,000 puts of
# answers of the load test's shape: 334 bytes of the table's own an answer, of which 59
# request key and 22 L1 key, and the 150-byte reply it keeps alive: 286 beyond those;
# handles of 12 to 128 characters measured 518 to 850 bytes an answer, all counted).
OVERHEAD = 360

# A kept answer: (L1 key, values it was built from, the reply as first sent, prefix
# text for the statistics, response code). A plain tuple, not a NamedTuple: the
# collector untracks a tuple of atomic fields, never a subclass. The reply is one bytes
# object, sliced round the two spliced fields when sent: kept as the three pieces
# between them, a hit read three objects scattered over the heap, and on 100,000 kept
# answers that cost ~300 ns more a splice (a micro-benchmark of 10^6 uniform splices).
Ready = tuple[str, bytes | None, bytes, str, int]


def request_key(wire: bytes) -> bytes:
    """The request without its request id, the header bytes the answer does not
    depend on, and its expiration. Messages shorter than a resolution's 44 bytes
    cannot meet a kept key: theirs is shorter."""
    return wire[:8] + wire[12:32] + wire[40:]


def cost(key: bytes, l1_key: str, reply: bytes, values: bytes | None) -> int:
    """What a kept answer holds: its own key, the L1 key (a str of its own, not L1's),
    the reply and the values it keeps alive, and OVERHEAD."""
    return len(key) + len(l1_key) + len(reply) + (len(values) if values else 0) + OVERHEAD


class ReadyAnswers:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[bytes, tuple[Ready, int]] = OrderedDict()  # oldest first
        self._bytes = 0
        self.evicted = 0  # answers pushed out by newer ones (the bound)
        self.sent = 0  # answers sent from the table (counted by the caller)
        self._reported = (0, 0)

    def __len__(self) -> int:
        return len(self._d)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, wire: bytes) -> Ready | None:
        if not self._d or len(wire) > MAX_REQUEST or type(wire) is not bytes:
            return None
        got = self._d.get(request_key(wire))
        return got[0] if got is not None else None

    def put(
        self, wire: bytes, key: str, values: bytes | None, reply: bytes, prefix: str, rc: int
    ) -> None:
        """Keep ``reply``, the answer to ``wire`` built from ``values`` (L1's, for
        ``key``). The caller has checked the request is safe to replay."""
        if (
            self.max_bytes <= 0
            or not MIN_REQUEST <= len(wire) <= MAX_REQUEST
            or len(reply) < MIN_REQUEST
            or type(wire) is not bytes
        ):
            return
        k = request_key(wire)
        c = cost(k, key, reply, values)
        if c > self.max_bytes:
            return
        old = self._d.pop(k, None)
        if old is not None:
            self._bytes -= old[1]
        d = self._d
        while d and self._bytes + c > self.max_bytes:
            _k, (_r, was) = d.popitem(last=False)
            self._bytes -= was
            self.evicted += 1
        d[k] = ((key, values, reply, prefix, rc), c)
        self._bytes += c

    def report(self) -> None:
        """The table's state into the metrics (once a second, off the hot path)."""
        metrics.READY_ANSWERS.set(len(self._d))
        metrics.READY_ANSWERS_BYTES.set(self._bytes)
        (sent, evicted), self._reported = self._reported, (self.sent, self.evicted)
        if self.sent > sent:
            metrics.READY_ANSWERS_SENT.inc(self.sent - sent)
        if self.evicted > evicted:
            metrics.READY_ANSWERS_EVICTED.inc(self.evicted - evicted)


def reply_for(ready: Ready, wire: bytes) -> bytes:
    """The kept answer with ``wire``'s request id and expiration."""
    r = ready[2]
    return b"".join((r[:8], wire[8:12], r[12:36], wire[36:40], r[40:]))
