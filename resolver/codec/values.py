"""Handle values as deployed clients encode them (handle-protocol.md §4).

The layout differs from RFC 3651 §3.1: the timestamp is in Unix seconds and the
permissions are one byte.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache

from .codes import DEFAULT_PERMISSIONS, DEFAULT_TTL, MAX_HANDLE_LENGTH, MAX_VALUES, Permission
from .errors import ProtocolError
from .wire import I32, U32, Reader

# index, timestamp, ttlType, ttl, permissions, then type/data/refs.
# 4 + 4 + 1 + 4 + 1 + 4 (type len) + 4 (data len) + 4 (nRefs)
VALUE_MIN_SIZE = 26
REFERENCE_MIN_SIZE = 8


@dataclass(frozen=True, slots=True)
class ValueReference:
    handle: str
    index: int


@dataclass(frozen=True, slots=True)
class HandleValue:
    index: int
    type: str
    data: bytes
    ttl: int = DEFAULT_TTL
    ttl_type: int = 0  # TtlType.RELATIVE
    timestamp: int = 0  # Unix seconds
    permissions: int = int(DEFAULT_PERMISSIONS)
    references: tuple[ValueReference, ...] = ()

    @property
    def public_read(self) -> bool:
        return bool(self.permissions & Permission.PUBLIC_READ)

    def type_matches(self, wanted: str) -> bool:
        """A type ending in "." matches that type and its sub-types ("URL." matches "URL.1")."""
        if wanted.endswith("."):
            return self.type == wanted[:-1] or self.type.startswith(wanted)
        return self.type == wanted


# index, timestamp, ttlType, ttl, permissions and the type's length, packed at once
_HEAD = struct.Struct(">iIBiBI")
_NO_REFERENCES = U32.pack(0)


def encode_value(v: HandleValue) -> bytes:
    return encode_value_fields(
        v.index, v.type, v.data, v.ttl, v.ttl_type, v.timestamp, v.permissions, v.references
    )


def encode_value_fields(
    index: int,
    type_: str,
    data: bytes,
    ttl: int,
    ttl_type: int,
    timestamp: int,
    permissions: int,
    references: tuple[ValueReference, ...],
) -> bytes:
    """A value's wire bytes from its fields, without building a HandleValue (a batch
    stamps thousands of values: the one header pack is about half the time of packing
    field by field)."""
    t = type_.encode("utf-8")
    try:
        head = _HEAD.pack(index, timestamp, ttl_type, ttl, permissions, len(t))
    except struct.error:  # a field out of range: refused as field by field refuses it
        head = b"".join(
            (
                I32.pack(index),
                U32.pack(timestamp),
                bytes((ttl_type,)),
                I32.pack(ttl),
                bytes((permissions,)),
                U32.pack(len(t)),
            )
        )
    if not references:
        return b"".join((head, t, U32.pack(len(data)), data, _NO_REFERENCES))
    parts = [head, t, U32.pack(len(data)), data, U32.pack(len(references))]
    for ref in references:
        h = ref.handle.encode("utf-8")
        parts += (U32.pack(len(h)), h, I32.pack(ref.index))
    return b"".join(parts)


def encode_values(values: tuple[HandleValue, ...] | list[HandleValue]) -> bytes:
    """``int4 n`` followed by the values: the form a resolution answer and the cache hold."""
    if len(values) > MAX_VALUES:
        raise ProtocolError(f"{len(values)} values is over the limit of {MAX_VALUES}")
    return U32.pack(len(values)) + b"".join([encode_value(v) for v in values])


def read_value(r: Reader) -> HandleValue:
    index = r.i32("value index")
    timestamp = r.u32("value timestamp")
    ttl_type = r.u8("value ttl type")
    if ttl_type > 1:
        raise ProtocolError(f"value ttl type: {ttl_type} is neither 0 (relative) nor 1 (absolute)")
    ttl = r.i32("value ttl")
    permissions = r.u8("value permissions")
    vtype = r.text("value type", MAX_HANDLE_LENGTH)
    data = r.blob("value data")
    n = r.count("value references", REFERENCE_MIN_SIZE)
    refs = tuple(
        ValueReference(r.text("reference handle", MAX_HANDLE_LENGTH), r.i32("reference index"))
        for _ in range(n)
    )
    return HandleValue(index, vtype, data, ttl, ttl_type, timestamp, permissions, refs)


def read_values(r: Reader) -> tuple[HandleValue, ...]:
    n = r.count("value count", VALUE_MIN_SIZE, MAX_VALUES)
    return tuple(read_value(r) for _ in range(n))


_VALUE_HEAD = struct.Struct(">iIBiB")  # index, timestamp, ttlType, ttl, permissions


def summarize_values(values_wire: bytes) -> tuple[bool, int | None, int | None]:
    """(all values publicly readable, smallest relative TTL, earliest absolute TTL).

    What a cache needs to know of a value list, read without building the values:
    a cache fill on the miss path costs a tenth of ``decode_values``. The bytes are
    checked as they are walked; anything out of bounds raises ProtocolError.
    """
    try:
        (n,) = U32.unpack_from(values_wire, 0)
        pos = 4
        end = len(values_wire)
        public = int(Permission.PUBLIC_READ)
        all_public = True
        rel: int | None = None
        ab: int | None = None
        for _ in range(n):
            _i, _ts, ttl_type, ttl, perms = _VALUE_HEAD.unpack_from(values_wire, pos)
            pos += 14
            pos += 4 + U32.unpack_from(values_wire, pos)[0]  # type
            pos += 4 + U32.unpack_from(values_wire, pos)[0]  # data
            (refs,) = U32.unpack_from(values_wire, pos)
            pos += 4
            for _ in range(refs):
                pos += 8 + U32.unpack_from(values_wire, pos)[0]
            if pos > end:
                raise ProtocolError("value list: a length points past the end")
            if not perms & public:
                all_public = False
            if ttl_type:
                ab = ttl if ab is None else min(ab, ttl)
            else:
                rel = ttl if rel is None else min(rel, ttl)
    except struct.error:
        raise ProtocolError("value list: truncated") from None
    if pos != end:
        raise ProtocolError("value list: trailing bytes")
    return all_public, rel, ab


def decode_value(data: bytes) -> HandleValue:
    """One value alone, nothing after it."""
    r = Reader(data)
    v = read_value(r)
    r.expect_end("handle value")
    return v


# A write decodes the same lists several times (its prefix's admins and groups, then the
# handle's values for the permission check, the decision and the change), and the next
# write of a handle reads back the list the last one wrote. The decoded values are
# immutable (a tuple of frozen values), so equal bytes can share them. Bounded: lists up
# to DECODED_MAX_BYTES, DECODED_LISTS of them: 2 MiB of bytes, and their decoded values
# cost more (lists packed with empty values or references: up to ~25 MB per worker).
DECODED_LISTS = 512
DECODED_MAX_BYTES = 4096


def decode_values(data: bytes) -> tuple[HandleValue, ...]:
    """The ``int4 n, n × value`` form written by :func:`encode_values`."""
    if type(data) is bytes and len(data) <= DECODED_MAX_BYTES:
        return _decode_values_kept(data)
    return _decode_values(data)


def _decode_values(data: bytes) -> tuple[HandleValue, ...]:
    r = Reader(data)
    vs = read_values(r)
    r.expect_end("value list")
    return vs


# a list that does not decode raises each time: errors are not kept
_decode_values_kept = lru_cache(maxsize=DECODED_LISTS)(_decode_values)
