"""HS_PUBKEY data, in the reference implementation's layout.

``str keyType, int2 flags``, then for RSA the exponent and modulus, for DSA q, p, g, y,
for DH y, p, g — each a ``bytes`` field holding a big-endian two's-complement
integer (Java's BigInteger.toByteArray), read back as unsigned as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError
from .wire import U16, U32, Reader

RSA_PUB_KEY = "RSA_PUB_KEY"
DSA_PUB_KEY = "DSA_PUB_KEY"
DH_PUB_KEY = "DH_PUB_KEY"


@dataclass(frozen=True, slots=True)
class RsaPublicKey:
    exponent: int
    modulus: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class DsaPublicKey:
    q: int
    p: int
    g: int
    y: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class DhPublicKey:
    """A Diffie-Hellman public value with its group, as SESSION_SETUP carries it."""

    y: int
    p: int
    g: int
    flags: int = 0


@dataclass(frozen=True, slots=True)
class OtherPublicKey:
    """A key type this node does not interpret (DH, or future ones): kept as bytes."""

    key_type: str
    flags: int
    rest: bytes


PublicKey = RsaPublicKey | DsaPublicKey | DhPublicKey | OtherPublicKey


def _int_bytes(n: int) -> bytes:
    # Java's BigInteger.toByteArray for a non-negative number: minimal, with a sign bit of 0.
    if n < 0:
        raise ProtocolError("key integers must not be negative")
    return n.to_bytes(n.bit_length() // 8 + 1, "big")


def _put_int(n: int) -> bytes:
    b = _int_bytes(n)
    return U32.pack(len(b)) + b


def encode_public_key(key: PublicKey) -> bytes:
    if isinstance(key, RsaPublicKey):
        t = RSA_PUB_KEY.encode()
        # The reference encoder sizes its buffer for one more int than it
        # writes, so every RSA key it emits ends in four zero bytes; we match it
        # byte for byte (the vector checks this).
        return (
            U32.pack(len(t))
            + t
            + U16.pack(key.flags)
            + _put_int(key.exponent)
            + _put_int(key.modulus)
            + bytes(4)
        )
    if isinstance(key, DsaPublicKey):
        t = DSA_PUB_KEY.encode()
        return (
            U32.pack(len(t))
            + t
            + U16.pack(key.flags)
            + b"".join(_put_int(x) for x in (key.q, key.p, key.g, key.y))
        )
    if isinstance(key, DhPublicKey):
        t = DH_PUB_KEY.encode()
        return (
            U32.pack(len(t))
            + t
            + U16.pack(key.flags)
            + b"".join(_put_int(x) for x in (key.y, key.p, key.g))
        )
    t = key.key_type.encode("utf-8")
    return U32.pack(len(t)) + t + U16.pack(key.flags) + key.rest


def decode_public_key(data: bytes) -> PublicKey:
    r = Reader(data)
    key_type = r.text("HS_PUBKEY key type", 64)
    flags = r.u16("HS_PUBKEY flags")
    if key_type == RSA_PUB_KEY:
        e = int.from_bytes(r.blob("RSA exponent"), "big")
        n = int.from_bytes(r.blob("RSA modulus"), "big")
        # Trailing bytes after the modulus are ignored, as the reference reader does.
        if e == 0 or n == 0:
            raise ProtocolError("HS_PUBKEY: RSA exponent and modulus must be non-zero")
        return RsaPublicKey(e, n, flags)
    if key_type == DSA_PUB_KEY:
        q, p, g, y = (int.from_bytes(r.blob(f"DSA {x}"), "big") for x in "qpgy")
        return DsaPublicKey(q, p, g, y, flags)
    if key_type == DH_PUB_KEY:
        y, p, g = (int.from_bytes(r.blob(f"DH {x}"), "big") for x in "ypg")
        if p < 3 or not 1 < g < p or not 1 < y < p - 1:
            raise ProtocolError("HS_PUBKEY: DH group or public value out of range")
        return DhPublicKey(y, p, g, flags)
    return OtherPublicKey(key_type, flags, r.raw(r.remaining(), "key"))
