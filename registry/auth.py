"""Checking a client's answer to a 402 challenge, as the reference server does.

The client proves it holds a key over ``nonce ‖ request digest`` (raw bytes):

* HS_SECKEY: a keyed hash (1/2/3: MD5/SHA-1/SHA-256 of key ‖ data ‖ key), an HMAC
  (0x12 SHA-1, 0x13 SHA-256), or PBKDF2-HMAC-SHA1 (0x22: the key is derived from the
  secret with the salt, iteration count and length the answer carries, then used as
  the HMAC-SHA1 key). Comparisons are constant-time.
* HS_PUBKEY: an RSA (PKCS#1 v1.5) or DSA signature with SHA-1 or SHA-256.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from idnode.errors import RegistryError
from idnode.resolver.codec import ProtocolError
from idnode.resolver.codec.auth import (
    AUTH_PUBKEY,
    AUTH_SECKEY,
    MAC_PBKDF2_HMAC_SHA1,
    decode_secret_key_mac,
    decode_signature,
    keyed_mac,
    pbkdf2_mac,
    signed_data,
)
from idnode.resolver.codec.bodies import ChallengeAnswer
from idnode.resolver.codec.keys import DsaPublicKey, RsaPublicKey, decode_public_key

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "SHA1": hashes.SHA1,
    "SHA-1": hashes.SHA1,
    "SHA256": hashes.SHA256,
    "SHA-256": hashes.SHA256,
}


@dataclass(frozen=True, slots=True)
class Identity:
    """Who answered a challenge: the key's handle and index, e.g. 300:0.NA/88.166."""

    handle: str
    index: int

    def __str__(self) -> str:
        return f"{self.index}:{self.handle}"

    @classmethod
    def parse(cls, text: str) -> Identity:
        index, sep, handle = text.strip().partition(":")
        if not sep or not handle or not index.isdigit():
            raise ValueError(f"an admin is INDEX:HANDLE like 300:0.NA/88.166, not {text!r}")
        return cls(handle, int(index))


class AuthError(RegistryError):
    """The answer does not prove the key (the reason is for logs and the audit row)."""


class AuthBusy(AuthError):
    """Too many costly answers are being checked already: try again (not a failed login)."""


def verify_secret_key(secret: bytes, signed_response: bytes, data: bytes) -> None:
    try:
        mac = decode_secret_key_mac(signed_response)
    except ProtocolError as exc:
        raise AuthError(exc.reason) from None
    if mac.algorithm == MAC_PBKDF2_HMAC_SHA1:
        expected = pbkdf2_mac(secret, data, mac.salt, mac.iterations, mac.key_length)
    else:
        expected = keyed_mac(mac.algorithm, secret, data)
    if not hmac.compare_digest(expected, mac.mac):
        raise AuthError("secret key MAC does not match")


def verify_public_key(key_data: bytes, signed_response: bytes, data: bytes) -> None:
    try:
        sig = decode_signature(signed_response)
        key = decode_public_key(key_data)
    except ProtocolError as exc:
        raise AuthError(exc.reason) from None
    alg = _HASHES.get(sig.hash_algorithm.upper())
    if alg is None:
        raise AuthError(f"unsupported signature hash {sig.hash_algorithm!r}")
    try:
        if isinstance(key, RsaPublicKey):
            rsa.RSAPublicNumbers(key.exponent, key.modulus).public_key().verify(
                sig.signature, data, padding.PKCS1v15(), alg()
            )
        elif isinstance(key, DsaPublicKey):
            params = dsa.DSAParameterNumbers(key.p, key.q, key.g)
            dsa.DSAPublicNumbers(key.y, params).public_key().verify(sig.signature, data, alg())
        else:
            raise AuthError(f"unsupported key type {type(key).__name__}")
    except InvalidSignature:
        raise AuthError("signature does not verify") from None
    except ValueError as exc:  # a malformed key or signature
        raise AuthError(f"cannot verify: {exc}") from None


def verify_answer(answer: ChallengeAnswer, key_data: bytes, nonce: bytes, digest: bytes) -> None:
    """Raise AuthError unless ``answer`` proves ``key_data`` (a raw secret or HS_PUBKEY data)."""
    data = signed_data(nonce, digest)
    if answer.auth_type == AUTH_SECKEY:
        verify_secret_key(key_data, answer.signed_response, data)
    elif answer.auth_type == AUTH_PUBKEY:
        verify_public_key(key_data, answer.signed_response, data)
    else:
        raise AuthError(f"unknown authentication type {answer.auth_type!r}")


class _OffLoop:
    """Runs costly checks on threads of their own, at most ``queue`` waiting at once.

    A PBKDF2 answer names its own cost (up to codec.auth's caps: ~45 ms of one core),
    and a VERIFY_RESPONSE needs no challenge first. Checked inline, one such packet
    would stall every client of the worker; here hashlib derives with the GIL released
    while the event loop answers the others, and a flood is refused as busy instead of
    queueing without end. Made lazily, so a forked worker gets its own threads."""

    def __init__(self, threads: int, queue: int) -> None:
        self.threads = threads
        self.queue = queue
        self.waiting = 0
        self._pool: ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[..., None], *args: bytes) -> None:
        if self.waiting >= self.queue:
            raise AuthBusy(f"{self.queue} costly answers are being checked; try again")
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="idnode-pbkdf2")
        self.waiting += 1
        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.waiting -= 1


PBKDF2_CHECKS = _OffLoop(threads=2, queue=16)


async def check_secret_key(secret: bytes, signed_response: bytes, data: bytes) -> None:
    """verify_secret_key, with PBKDF2 answers checked off the event loop (AuthBusy when
    too many wait)."""
    if signed_response[:1] == bytes((MAC_PBKDF2_HMAC_SHA1,)):
        await PBKDF2_CHECKS.run(verify_secret_key, secret, signed_response, data)
    else:
        verify_secret_key(secret, signed_response, data)


async def check_answer(
    answer: ChallengeAnswer, key_data: bytes, nonce: bytes, digest: bytes
) -> None:
    """verify_answer for the event loop: PBKDF2 answers are checked off it."""
    if answer.auth_type == AUTH_SECKEY:
        await check_secret_key(key_data, answer.signed_response, signed_data(nonce, digest))
    else:
        verify_answer(answer, key_data, nonce, digest)
