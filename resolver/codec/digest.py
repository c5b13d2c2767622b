"""The request digest a response carries when RD is set (handle-protocol.md §1).

It covers the request's header and body (24 + bodyLength bytes). The algorithm
follows the request's version: SHA-256 from 2.7, SHA-1 from 2.1 to 2.6, and below
2.1 the old form, a 4-byte length + MD5 (its leading zero byte doubles as the
"type 0" that newer readers see).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from .codes import ENVELOPE_SIZE, HEADER_SIZE, HashType
from .errors import ProtocolError
from .wire import U32, Reader

DIGEST_SIZES = {HashType.MD5: 16, HashType.SHA1: 20, HashType.SHA256: 32}
_HASHLIB_NAMES = {
    HashType.OLD_MD5: "md5",
    HashType.MD5: "md5",
    HashType.SHA1: "sha1",
    HashType.SHA256: "sha256",
}


@dataclass(frozen=True, slots=True)
class RequestDigest:
    hash_type: int  # HashType
    digest: bytes


def hash_type_for_version(major: int, minor: int) -> HashType:
    if (major, minor) >= (2, 7):
        return HashType.SHA256
    if (major, minor) >= (2, 1):
        return HashType.SHA1
    return HashType.OLD_MD5


def digest_of(header_and_body: bytes, major: int, minor: int) -> RequestDigest:
    """Digest ``header_and_body`` (the request without envelope and credential)."""
    t = hash_type_for_version(major, minor)
    return RequestDigest(t, hashlib.new(_HASHLIB_NAMES[t], header_and_body).digest())


def digest_request(wire: bytes) -> RequestDigest:
    """Digest a whole request as received (envelope + message), picking the span itself."""
    if len(wire) < ENVELOPE_SIZE + HEADER_SIZE:
        raise ProtocolError("request too short to digest")
    (body_len,) = U32.unpack_from(wire, ENVELOPE_SIZE + 20)
    end = ENVELOPE_SIZE + HEADER_SIZE + body_len
    if end > len(wire):
        raise ProtocolError("request body runs past the end; cannot digest")
    return digest_of(wire[ENVELOPE_SIZE:end], wire[0], wire[1])


def read_digest(r: Reader) -> RequestDigest:
    t = r.u8("request digest type")
    if t == HashType.OLD_MD5:
        r.pos -= 1  # the type byte was the first byte of the length
        d = r.blob("old-form request digest", 64)
        return RequestDigest(HashType.OLD_MD5, d)
    try:
        size = DIGEST_SIZES[HashType(t)]
    except ValueError:
        raise ProtocolError(f"request digest type: unknown hash type {t}") from None
    return RequestDigest(t, r.raw(size, "request digest"))


def encode_digest(d: RequestDigest) -> bytes:
    if d.hash_type == HashType.OLD_MD5:
        return U32.pack(len(d.digest)) + d.digest
    size = DIGEST_SIZES.get(HashType(d.hash_type))
    if size != len(d.digest):
        raise ProtocolError(f"digest of type {d.hash_type} must be {size} bytes")
    return bytes((d.hash_type,)) + d.digest
