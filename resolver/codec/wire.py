"""Bounded primitive readers and writers: big-endian integers, `str` and `bytes` fields.

Every read checks the bytes it needs before touching them, so malformed input
fails with ProtocolError at the field that is wrong, and no length field can make
the codec allocate more than the message it was given.
"""

from __future__ import annotations

import struct

from .errors import ProtocolError

U8 = struct.Struct(">B")
U16 = struct.Struct(">H")
U32 = struct.Struct(">I")
I32 = struct.Struct(">i")

_INT31 = 0x7FFFFFFF


class Reader:
    """A cursor over ``buf[pos:end]``."""

    __slots__ = ("buf", "end", "pos")

    def __init__(self, buf: bytes, pos: int = 0, end: int | None = None) -> None:
        self.buf = buf
        self.pos = pos
        self.end = len(buf) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int, what: str) -> None:
        if self.end - self.pos < n:
            raise ProtocolError(
                f"{what}: needs {n} bytes at offset {self.pos}, only {self.end - self.pos} left"
            )

    def u8(self, what: str) -> int:
        self._need(1, what)
        v = self.buf[self.pos]
        self.pos += 1
        return v

    def u16(self, what: str) -> int:
        self._need(2, what)
        (v,) = U16.unpack_from(self.buf, self.pos)
        self.pos += 2
        return int(v)

    def u32(self, what: str) -> int:
        self._need(4, what)
        (v,) = U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def i32(self, what: str) -> int:
        self._need(4, what)
        (v,) = I32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return int(v)

    def raw(self, n: int, what: str) -> bytes:
        self._need(n, what)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(v)

    def length(self, what: str, limit: int | None = None) -> int:
        """A 4-byte length that must fit in what is left (and under ``limit``)."""
        n = self.u32(what)
        if n > _INT31:
            raise ProtocolError(f"{what}: negative length {n - (1 << 32)}")
        if limit is not None and n > limit:
            raise ProtocolError(f"{what}: length {n} over the limit of {limit}")
        if n > self.end - self.pos:
            raise ProtocolError(
                f"{what}: length {n} points past the end ({self.end - self.pos} bytes left)"
            )
        return n

    def blob(self, what: str, limit: int | None = None) -> bytes:
        n = self.length(what, limit)
        v = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(v)

    def text(self, what: str, limit: int | None = None) -> str:
        raw = self.blob(what, limit)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(f"{what}: invalid UTF-8 at byte {exc.start}") from None

    def count(self, what: str, item_min_size: int, limit: int | None = None) -> int:
        """An element count; each element needs at least ``item_min_size`` bytes.

        Checking the count against the bytes left is what stops a count of 2^31
        from turning into a loop or an allocation.
        """
        n = self.u32(what)
        if n > _INT31:
            raise ProtocolError(f"{what}: negative count {n - (1 << 32)}")
        if limit is not None and n > limit:
            raise ProtocolError(f"{what}: count {n} over the limit of {limit}")
        if n * item_min_size > self.end - self.pos:
            raise ProtocolError(
                f"{what}: count {n} cannot fit in the {self.end - self.pos} bytes left"
            )
        return n

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise ProtocolError(f"{what}: {self.end - self.pos} unexpected trailing bytes")


def put_u32(v: int) -> bytes:
    return U32.pack(v)


def put_blob(v: bytes) -> bytes:
    return U32.pack(len(v)) + v


def put_text(v: str) -> bytes:
    b = v.encode("utf-8")
    return U32.pack(len(b)) + b
