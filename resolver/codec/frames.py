"""Framing a TCP byte stream into whole messages (envelope + message, repeated)."""

from __future__ import annotations

from .codes import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH
from .errors import ProtocolError
from .wire import U32


class FrameBuffer:
    """Feed bytes as they arrive; take whole messages out, all at once (feed) or one at
    a time (append, then next: a server that stops taking messages while its answers
    are not read keeps the rest here, unparsed).

    A length over the limit raises ProtocolError at once, before any of that
    message is buffered, so a peer cannot make the server hold 4 GiB.
    """

    __slots__ = ("_buf", "_start")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0  # bytes before it were taken out; dropped when they are half

    def __len__(self) -> int:
        """Bytes received and not yet taken out as a message."""
        return len(self._buf) - self._start

    def append(self, data: bytes) -> None:
        if self._start and self._start * 2 >= len(self._buf):
            del self._buf[: self._start]
            self._start = 0
        self._buf += data

    def head(self, n: int) -> bytes:
        """Up to ``n`` bytes not yet taken out (the envelope of a message that failed)."""
        return bytes(self._buf[self._start : self._start + n])

    def next(self) -> bytes | None:
        """The next whole message, or None until more bytes come."""
        buf = self._buf
        start = self._start
        if len(buf) - start < ENVELOPE_SIZE:
            return None
        (mlen,) = U32.unpack_from(buf, start + 16)
        if mlen > MAX_MESSAGE_LENGTH:
            raise ProtocolError(f"message length {mlen} over the limit of {MAX_MESSAGE_LENGTH}")
        end = start + ENVELOPE_SIZE + mlen
        if end > len(buf):
            return None
        frame = bytes(buf[start:end])
        if end == len(buf):
            buf.clear()  # the usual case: nothing left over, and the memory goes back
            self._start = 0
        else:
            self._start = end
        return frame

    def feed(self, data: bytes) -> list[bytes]:
        self.append(data)
        out: list[bytes] = []
        while (frame := self.next()) is not None:
            out.append(frame)
        return out
