"""HS_VLIST data (a list of value references) and HS_SERV/HS_ALIAS data (one handle)."""

from __future__ import annotations

from .codes import MAX_HANDLE_LENGTH
from .errors import ProtocolError
from .values import REFERENCE_MIN_SIZE, ValueReference
from .wire import I32, U32, Reader


def encode_vlist(refs: tuple[ValueReference, ...] | list[ValueReference]) -> bytes:
    parts = [U32.pack(len(refs))]
    for ref in refs:
        h = ref.handle.encode("utf-8")
        parts += (U32.pack(len(h)), h, I32.pack(ref.index))
    return b"".join(parts)


def decode_vlist(data: bytes) -> tuple[ValueReference, ...]:
    r = Reader(data)
    n = r.count("HS_VLIST count", REFERENCE_MIN_SIZE)
    refs = tuple(
        ValueReference(r.text("HS_VLIST handle", MAX_HANDLE_LENGTH), r.i32("HS_VLIST index"))
        for _ in range(n)
    )
    r.expect_end("HS_VLIST data")
    return refs


def decode_handle_text(data: bytes, what: str) -> str:
    """HS_SERV and HS_ALIAS carry a handle as plain UTF-8 text."""
    if len(data) > MAX_HANDLE_LENGTH:
        raise ProtocolError(f"{what}: handle of {len(data)} bytes is over {MAX_HANDLE_LENGTH}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtocolError(f"{what}: invalid UTF-8 at byte {exc.start}") from None
