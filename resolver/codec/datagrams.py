"""UDP multi-packet messages (handle-protocol.md §5).

A datagram is at most 512 bytes including its 20-byte envelope. A longer message
goes out as datagrams with sequence numbers 0..n-1, each envelope carrying the
TOTAL message length; the truncated flag is not set. The receiver reassembles by
(peer, request id), in any order, ignoring duplicates, within bounds of memory and
time per peer. Time is passed in, never read, so this stays sans-IO.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field, replace

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
    total: int
    count: int
    started: float
    head: bytes  # envelope of the first datagram seen, rewritten to sequence 0
    chunks: dict[int, bytes] = field(default_factory=dict)
    size: int = 0


class Reassembler:
    """Collects the datagrams of multi-packet messages.

    Bounds: at most ``max_pending_per_peer`` unfinished messages per peer (the
    oldest is dropped for a new one), ``max_bytes`` buffered in all, and
    ``timeout`` seconds for a message to complete (see :meth:`expire`).
    """

    def __init__(
        self,
        *,
        timeout: float = 5.0,
        max_pending_per_peer: int = 8,
        max_bytes: int = 16 * 1024 * 1024,
        payload_size: int = UDP_PAYLOAD_SIZE,
    ) -> None:
        self.timeout = timeout
        self.max_pending_per_peer = max_pending_per_peer
        self.max_bytes = max_bytes
        self.payload_size = payload_size
        self._pending: OrderedDict[tuple[Hashable, int], _Partial] = OrderedDict()
        self._per_peer: dict[Hashable, int] = {}
        self._bytes = 0
        # Messages completed within the timeout, so a late duplicate datagram is
        # recognised instead of opening a partial message that can never finish.
        self._completed: OrderedDict[tuple[Hashable, int], float] = OrderedDict()
        self.max_completed = 4096
        self.dropped = 0  # partial messages given up (timeout or bounds)

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        return self._bytes

    def feed(self, peer: Hashable, datagram: bytes, now: float) -> bytes | None:
        """Add one datagram; return the whole message (envelope + message) once complete."""
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
            self._make_room(peer, total)
            head = encode_envelope(replace(env, sequence=0))
            part = _Partial(total, count, now, head)
            self._pending[key] = part
            self._per_peer[peer] = self._per_peer.get(peer, 0) + 1
        elif part.total != total:
            self._drop(key)
            raise ProtocolError(
                f"request {env.request_id}: datagrams disagree on the message length"
            )
        if env.sequence in part.chunks:
            return None  # a duplicate
        part.chunks[env.sequence] = payload
        part.size += len(payload)
        self._bytes += len(payload)
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

    def _make_room(self, peer: Hashable, total: int) -> None:
        if self._per_peer.get(peer, 0) >= self.max_pending_per_peer:
            oldest = next(k for k in self._pending if k[0] == peer)
            self._drop(oldest)
        while self._pending and self._bytes + total > self.max_bytes:
            self._drop(next(iter(self._pending)))

    def _forget(self, key: tuple[Hashable, int]) -> None:
        part = self._pending.pop(key)
        self._bytes -= part.size
        peer = key[0]
        left = self._per_peer[peer] - 1
        if left:
            self._per_peer[peer] = left
        else:
            del self._per_peer[peer]

    def _drop(self, key: tuple[Hashable, int]) -> None:
        self._forget(key)
        self.dropped += 1
