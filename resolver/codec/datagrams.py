"""UDP multi-packet messages (handle-protocol.md §5).

A datagram is at most 512 bytes including its 20-byte envelope. A longer message
goes out as datagrams with sequence numbers 0..n-1, each envelope carrying the
TOTAL message length; the truncated flag is not set. The receiver reassembles by
(peer, request id), in any order, ignoring duplicates, within bounds of memory and
time per client and in all. Time is passed in, never read, so this stays sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace
from typing import Any

from .codes import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH, UDP_PAYLOAD_SIZE
from .errors import ProtocolError
from .message import decode_envelope, encode_envelope


def split_datagrams(wire: bytes, payload_size: int = UDP_PAYLOAD_SIZE) -> list[bytes]:
    """Split an encoded message (envelope + message) into datagrams."""
    if len(wire) < ENVELOPE_SIZE:
        raise ProtocolError("cannot split: shorter than an envelope")
    message = wire[ENVELOPE_SIZE:]
    if len(message) <= payload_size:
        return [wire]
    env = decode_envelope(wire)
    out = []
    for seq, start in enumerate(range(0, len(message), payload_size)):
        head = encode_envelope(replace(env, sequence=seq, message_length=len(message)))
        out.append(head + message[start : start + payload_size])
    return out


@dataclass(slots=True)
class _Partial:
    client: Hashable
    total: int
    count: int
    started: float
    head: bytes  # envelope of the first datagram seen, rewritten to sequence 0
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


_Key = tuple[Hashable, int]  # (peer, request id)


@dataclass(slots=True)
class _Client:
    """One client's unfinished messages, oldest first, and the bytes they hold."""

    keys: OrderedDict[_Key, None] = field(default_factory=OrderedDict)
    size: int = 0


class Reassembler:
    """Collects the datagrams of multi-packet messages.

    Bounds, each enforced by dropping the oldest unfinished message (of that client,
    or of all): ``max_pending_per_client`` messages and ``max_bytes_per_client``
    bytes per client, ``max_pending`` messages and ``max_bytes`` bytes in all, and
    ``timeout`` seconds for a message to complete (see :meth:`expire`).

    Every step is O(1) whatever the number pending: one table in arrival order (the
    front is the oldest, for expiry and the global bounds) and, per client, its own
    keys in arrival order (the front is the one its bounds drop). A client is what
    ``feed`` is told (the UDP door passes the source address without its port, so a
    sender cannot multiply its allowance by changing ports); messages are told
    apart by peer and request id.
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_pending_per_client: int = 8,
        max_bytes_per_client: int = 2 * MAX_MESSAGE_LENGTH,
        max_pending: int = 4096,
        max_bytes: int = 16 * 1024 * 1024,
        payload_size: int = UDP_PAYLOAD_SIZE,
    ) -> None:
        if max_pending_per_client < 1 or max_pending < 1:
            raise ValueError("the reassembly bounds must allow at least one message")
        self.timeout = timeout
        self.max_pending_per_client = max_pending_per_client
        self.max_bytes_per_client = max_bytes_per_client
        self.max_pending = max_pending
        self.max_bytes = max_bytes
        self.payload_size = payload_size
        self._pending: OrderedDict[_Key, _Partial] = OrderedDict()
        self._clients: dict[Hashable, _Client] = {}
        self._bytes = 0
        # Messages completed within the timeout, so a late duplicate datagram is
        # recognised instead of opening a partial message that can never finish.
        self._completed: OrderedDict[_Key, float] = OrderedDict()
        self.max_completed = 4096
        self.dropped = 0  # partial messages given up (timeout or bounds)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    @property
    def clients(self) -> int:
        """Clients with at least one unfinished message."""
        return len(self._clients)

    def pending_of(self, client: Hashable) -> tuple[int, int]:
        """(unfinished messages, bytes buffered) of one client."""
        c = self._clients.get(client)
        return (0, 0) if c is None else (len(c.keys), c.size)

    def feed(
        self, peer: Hashable, datagram: bytes, now: float, client: Hashable | None = None
    ) -> bytes | None:
        """Add one datagram; return the whole message (envelope + message) once complete.

        ``client`` is whom the per-client bounds count against (default: ``peer``).
        """
        env = decode_envelope(datagram)
        payload = datagram[ENVELOPE_SIZE:]
        total = env.message_length
        if len(payload) == total and env.sequence == 0:
            return datagram  # the common case: a message in one datagram
        if total > MAX_MESSAGE_LENGTH:  # pragma: no cover - decode_envelope checks it
            raise ProtocolError("message too long")
        count = -(-total // self.payload_size)
        if env.sequence >= count:
            raise ProtocolError(
                f"datagram sequence {env.sequence} beyond the {count} a {total}-byte message needs"
            )
        expected = min(self.payload_size, total - env.sequence * self.payload_size)
        if len(payload) != expected:
            raise ProtocolError(
                f"datagram {env.sequence} carries {len(payload)} bytes, expected {expected}"
            )
        key = (peer, env.request_id)
        part = self._pending.get(key)
        if part is None:
            if key in self._completed:
                return None  # a late duplicate of a message already delivered
            who = peer if client is None else client
            self._make_room(who)
            head = encode_envelope(replace(env, sequence=0))
            part = _Partial(who, total, count, now, head)
            self._pending[key] = part
            self._clients.setdefault(who, _Client()).keys[key] = None
        elif part.total != total:
            self._drop(key)
            raise ProtocolError(
                f"request {env.request_id}: datagrams disagree on the message length"
            )
        if env.sequence in part.chunks:
            return None  # a duplicate
        if not self._make_bytes(key, part, len(payload)):
            return None
        part.chunks[env.sequence] = payload
        part.size += len(payload)
        self._bytes += len(payload)
        self._clients[part.client].size += len(payload)
        if len(part.chunks) < part.count:
            return None
        self._forget(key)
        self._completed[key] = now
        if len(self._completed) > self.max_completed:
            self._completed.popitem(last=False)
        return part.head + b"".join(part.chunks[i] for i in range(part.count))

    def expire(self, now: float) -> int:
        """Drop partial messages older than the timeout; return how many."""
        while self._completed and now - next(iter(self._completed.values())) >= self.timeout:
            self._completed.popitem(last=False)
        n = 0
        while self._pending:
            key, part = next(iter(self._pending.items()))
            if now - part.started < self.timeout:
                break
            self._drop(key)
            n += 1
        return n

    def _make_room(self, client: Hashable) -> None:
        """Room for one more message of ``client``: drop its oldest, then the oldest of all."""
        c = self._clients.get(client)
        if c is not None and len(c.keys) >= self.max_pending_per_client:
            self._drop(next(iter(c.keys)))
        while len(self._pending) >= self.max_pending:
            self._drop(next(iter(self._pending)))

    def _make_bytes(self, key: _Key, part: _Partial, n: int) -> bool:
        """Room for ``n`` more bytes of message ``key`` within both byte bounds, dropping
        the oldest other messages (of its client, then of all). A message larger than a
        bound on its own is dropped itself (raising nothing: its sender learns by timeout)."""
        c = self._clients[part.client]
        while c.size + n > self.max_bytes_per_client:
            victim = _oldest_but(c.keys, key)
            self._drop(victim)
            if victim == key:
                return False
        while self._bytes + n > self.max_bytes:
            victim = _oldest_but(self._pending, key)
            self._drop(victim)
            if victim == key:
                return False
        return True

    def _forget(self, key: _Key) -> None:
        part = self._pending.pop(key)
        self._bytes -= part.size
        c = self._clients[part.client]
        del c.keys[key]
        c.size -= part.size
        if not c.keys:
            del self._clients[part.client]

    def _drop(self, key: _Key) -> None:
        self._forget(key)
        self.dropped += 1


def _oldest_but(table: OrderedDict[_Key, Any], key: _Key) -> _Key:
    """The first key of ``table`` that is not ``key`` (or ``key`` when it is alone): O(1)."""
    keys = iter(table)
    first = next(keys)
    return next(keys, key) if first == key else first
