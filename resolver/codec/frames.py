"""Framing a TCP byte stream into whole messages (envelope + message, repeated)."""

from __future__ import annotations

from .codes import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH
from .errors import ProtocolError
from .wire import U32


class FrameBuffer:
    """Feed bytes as they arrive; take whole messages out.

    A length over the limit raises ProtocolError at once, before any of that
    message is buffered, so a peer cannot make the server hold 4 GiB.
    """

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def __len__(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        buf = self._buf
        start = 0
        while len(buf) - start >= ENVELOPE_SIZE:
            (mlen,) = U32.unpack_from(buf, start + 16)
            if mlen > MAX_MESSAGE_LENGTH:
                raise ProtocolError(f"message length {mlen} over the limit of {MAX_MESSAGE_LENGTH}")
            end = start + ENVELOPE_SIZE + mlen
            if end > len(buf):
                break
            out.append(bytes(buf[start:end]))
            start = end
        if start:
            del buf[:start]
        return out
