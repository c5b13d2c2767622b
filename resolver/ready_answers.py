"""Answers to L1-hit resolutions, kept ready to send but for two fields.

An answer built from an L1 entry is a function of two things only:
- the request's bytes: version, envelope flags, session, request id, opFlags,
  expiration, the handle and its index and type filters; and
- the entry's values (``all_public``, the only other field ``answer`` reads, is
  computed from them).

Of the request, the request id (envelope bytes 8..11) and the expiration (message
bytes 36..39) only come back unchanged in the answer, at the same offsets; and they are
what changes between two askings of the same thing (the HANDLE.NET library sets the
expiration from the clock). So the request's other bytes find the answer given last
time, and the new request's two fields are spliced into it.
The answer is still good while L1 holds the *same values object* for the handle:
holding it keeps the object alive, so no other values can be the same object; an
invalidation, a refill or an expiry in L1 replaces or drops it.

On a hit, the Handle doors skip decoding the request, filtering the values and
encoding the answer, and only splice in the two fields. That was about a third of
an L1 hit's CPU (cProfile of the UDP door, in process).

Only answers that are safe to replay are kept: no session, not encrypted, not
certified, no request digest (RD: it hashes the header, expiration included). The
caller checks; the key holds the envelope's flags and session and the opFlags, so a
request that differs there never matches.

Memory is bounded in bytes; over the bound the table starts again empty, and the
answers that are still asked for come back on their next miss.
"""

from __future__ import annotations

from typing import NamedTuple

from . import metrics

MAX_REQUEST = 1024  # longer requests (long handles, many filters) are not kept
MIN_REQUEST = 44  # envelope and header: a shorter message has no expiration to splice
OVERHEAD = 200  # bytes a kept answer costs beyond its key and reply (objects, slot)


class Ready(NamedTuple):
    key: str  # the handle's L1 key (normalised)
    values: bytes | None  # the L1 entry's values the reply was built from
    head: bytes  # the reply's first 8 bytes (version, flags, session)
    mid: bytes  # the reply's bytes 12..35: after the request id, before the expiration
    tail: bytes  # the reply from byte 40 on (after the expiration)
    prefix: str  # the prefix the resolution counts under (statistics)
    rc: int  # the reply's response code


def request_key(wire: bytes) -> bytes:
    """The request without its request id and expiration. Requests of another length
    than a resolution's (44 bytes and more) cannot meet a kept key: theirs is shorter."""
    return wire[:8] + wire[12:36] + wire[40:]


class ReadyAnswers:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: dict[bytes, Ready] = {}
        self._bytes = 0
        self.restarts = 0  # times the table was emptied for being full
        self.sent = 0  # answers sent from the table (counted by the caller)
        self._reported = (0, 0)

    def __len__(self) -> int:
        return len(self._d)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, wire: bytes) -> Ready | None:
        if len(wire) > MAX_REQUEST or type(wire) is not bytes:
            return None
        return self._d.get(request_key(wire))

    def put(
        self, wire: bytes, key: str, values: bytes | None, reply: bytes, prefix: str, rc: int
    ) -> None:
        """Keep ``reply``, the answer to ``wire`` built from ``values`` (L1's, for
        ``key``). The caller has checked the request is safe to replay."""
        if (
            self.max_bytes <= 0
            or len(wire) > MAX_REQUEST
            or type(wire) is not bytes
            or len(wire) < MIN_REQUEST
            or len(reply) < MIN_REQUEST
        ):
            return
        k = request_key(wire)
        cost = len(k) + len(reply) + OVERHEAD
        old = self._d.get(k)
        if old is not None:
            self._bytes -= len(k) + len(old.head) + len(old.mid) + len(old.tail) + 8 + OVERHEAD
        elif self._bytes + cost > self.max_bytes:
            # Emptying beats LRU bookkeeping on every hit: the hot answers come back
            # on their next miss, at the cost of one ordinary answer each.
            self._d.clear()
            self._bytes = 0
            self.restarts += 1
            if cost > self.max_bytes:
                return
        self._d[k] = Ready(key, values, reply[:8], reply[12:36], reply[40:], prefix, rc)
        self._bytes += cost

    def clear(self) -> None:
        self._d.clear()
        self._bytes = 0

    def report(self) -> None:
        """The table's state into the metrics (once a second, off the hot path)."""
        metrics.READY_ANSWERS.set(len(self._d))
        metrics.READY_ANSWERS_BYTES.set(self._bytes)
        (sent, restarts), self._reported = self._reported, (self.sent, self.restarts)
        if self.sent > sent:
            metrics.READY_ANSWERS_SENT.inc(self.sent - sent)
        if self.restarts > restarts:
            metrics.READY_ANSWERS_RESTARTS.inc(self.restarts - restarts)


def reply_for(ready: Ready, wire: bytes) -> bytes:
    """The kept answer with ``wire``'s request id and expiration."""
    return b"".join((ready.head, wire[8:12], ready.mid, wire[36:40], ready.tail))
