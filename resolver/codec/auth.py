"""The parts of challenge-response authentication that are pure bytes.

A client answers a 402 challenge by proving it holds a key over
``nonce ‖ request digest`` (raw bytes; handle-protocol.md §3):

* HS_SECKEY: ``alg:1 ‖ mac``; 1/2/3 = MD5/SHA-1/SHA-256 of key ‖ data ‖ key,
  0x12/0x13 = HMAC-SHA1/HMAC-SHA256, 0x22 = PBKDF2-HMAC-SHA1 carrying its salt,
  iteration count and key length.
* HS_PUBKEY: ``str hashAlg, bytes signature``.

This module parses and writes those structures and computes the keyed-hash
MACs (stdlib only). Signature verification needs real key material and lives
with the registry's authentication.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from .errors import ProtocolError
from .wire import U32, Reader

AUTH_SECKEY = "HS_SECKEY"
AUTH_PUBKEY = "HS_PUBKEY"

MAC_MD5 = 0x01
MAC_SHA1 = 0x02
MAC_SHA256 = 0x03
MAC_HMAC_SHA1 = 0x12
MAC_HMAC_SHA256 = 0x13
MAC_PBKDF2_HMAC_SHA1 = 0x22

_KEYED_HASHES = {MAC_MD5: "md5", MAC_SHA1: "sha1", MAC_SHA256: "sha256"}
_HMACS = {MAC_HMAC_SHA1: "sha1", MAC_HMAC_SHA256: "sha256"}
_MAC_SIZES = {MAC_MD5: 16, MAC_SHA1: 20, MAC_SHA256: 32, MAC_HMAC_SHA1: 20, MAC_HMAC_SHA256: 32}

PBKDF2_DEFAULT_ITERATIONS = 10_000
PBKDF2_DEFAULT_KEY_BITS = 160
# An answer names its own PBKDF2 cost, and the node pays it before it knows whether the
# answer is right. The reference clients (HSJ 7.3 and 9, Util.doPbkdf2HmacSHA1) always
# send 10,000 iterations and 160 bits; ten times the iterations is room enough, and
# one SHA-1 block (160 bits: each further block is a full run of the iterations). At the
# caps a check costs ~45 ms of one core, run off the event loop (registry.auth).
PBKDF2_MAX_ITERATIONS = 100_000
PBKDF2_MAX_KEY_BITS = 160


@dataclass(frozen=True, slots=True)
class SecretKeyMac:
    algorithm: int
    mac: bytes
    salt: bytes = b""
    iterations: int = 0
    key_length: int = 0  # bits, PBKDF2 only


@dataclass(frozen=True, slots=True)
class PublicKeySignature:
    hash_algorithm: str  # "SHA-256", "SHA1", ...
    signature: bytes


def decode_secret_key_mac(signed: bytes) -> SecretKeyMac:
    if not signed:
        raise ProtocolError("HS_SECKEY answer: empty")
    alg = signed[0]
    if alg in _MAC_SIZES:
        mac = signed[1:]
        if len(mac) != _MAC_SIZES[alg]:
            raise ProtocolError(
                f"HS_SECKEY answer: algorithm {alg:#x} needs a {_MAC_SIZES[alg]}-byte MAC, "
                f"got {len(mac)}"
            )
        return SecretKeyMac(alg, mac)
    if alg == MAC_PBKDF2_HMAC_SHA1:
        r = Reader(signed, 1)
        salt = r.blob("PBKDF2 salt", 1024)
        iterations = r.u32("PBKDF2 iterations")
        key_length = r.u32("PBKDF2 key length")
        mac = r.blob("PBKDF2 MAC", 1024)
        r.expect_end("PBKDF2 answer")
        if not 0 < iterations <= PBKDF2_MAX_ITERATIONS:
            raise ProtocolError(f"PBKDF2 iterations: {iterations} out of range")
        if not 0 < key_length <= PBKDF2_MAX_KEY_BITS or key_length % 8:
            raise ProtocolError(f"PBKDF2 key length: {key_length} bits is not valid")
        return SecretKeyMac(alg, mac, salt, iterations, key_length)
    raise ProtocolError(f"HS_SECKEY answer: unknown MAC algorithm {alg:#x}")


def encode_secret_key_mac(m: SecretKeyMac) -> bytes:
    if m.algorithm == MAC_PBKDF2_HMAC_SHA1:
        return (
            bytes((m.algorithm,))
            + U32.pack(len(m.salt))
            + m.salt
            + U32.pack(m.iterations)
            + U32.pack(m.key_length)
            + U32.pack(len(m.mac))
            + m.mac
        )
    return bytes((m.algorithm,)) + m.mac


def decode_signature(signed: bytes) -> PublicKeySignature:
    r = Reader(signed)
    alg = r.text("signature hash algorithm", 64)
    sig = r.blob("signature", 8192)
    r.expect_end("HS_PUBKEY answer")
    return PublicKeySignature(alg, sig)


def encode_signature(s: PublicKeySignature) -> bytes:
    a = s.hash_algorithm.encode("utf-8")
    return U32.pack(len(a)) + a + U32.pack(len(s.signature)) + s.signature


def signed_data(nonce: bytes, request_digest: bytes) -> bytes:
    """What the client's key covers: the raw nonce followed by the raw request digest."""
    return nonce + request_digest


def keyed_mac(algorithm: int, secret: bytes, data: bytes) -> bytes:
    """The MAC an HS_SECKEY answer must carry for ``algorithm`` (not PBKDF2; see below)."""
    if algorithm in _KEYED_HASHES:
        return hashlib.new(_KEYED_HASHES[algorithm], secret + data + secret).digest()
    if algorithm in _HMACS:
        return hmac.new(secret, data, _HMACS[algorithm]).digest()
    raise ProtocolError(f"no keyed MAC for algorithm {algorithm:#x}")


def pbkdf2_mac(secret: bytes, data: bytes, salt: bytes, iterations: int, key_bits: int) -> bytes:
    """0x22 answers: HMAC-SHA1 of ``data`` keyed with PBKDF2-HMAC-SHA1(secret, salt, ...).

    This construction follows the issue's description of the reference client; no
    transcript of a 0x22 answer exists in shared/vectors to prove it byte for byte.
    """
    derived = hashlib.pbkdf2_hmac("sha1", secret, salt, iterations, key_bits // 8)
    return hmac.new(derived, data, "sha1").digest()
