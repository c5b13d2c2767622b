"""The registry's answer verification against the reference client's transcripts, and every
MAC and signature algorithm a client may use."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, padding, rsa

from idnode.registry.auth import (
    PBKDF2_CHECKS,
    AuthBusy,
    AuthError,
    Identity,
    check_secret_key,
    verify_answer,
)
from idnode.resolver.codec import ChallengeAnswer, decode
from idnode.resolver.codec.auth import (
    MAC_HMAC_SHA1,
    MAC_HMAC_SHA256,
    MAC_MD5,
    MAC_PBKDF2_HMAC_SHA1,
    MAC_SHA1,
    MAC_SHA256,
    PublicKeySignature,
    SecretKeyMac,
    encode_secret_key_mac,
    encode_signature,
    keyed_mac,
    pbkdf2_mac,
    signed_data,
)
from idnode.resolver.codec.keys import DsaPublicKey, RsaPublicKey, encode_public_key
from tests.unit.test_auth_transcripts import ANS1, ANS2, CHAL1, CHAL2, PUBKEY

NONCE, DIGEST = os.urandom(16), hashlib.sha256(b"request").digest()
DATA = signed_data(NONCE, DIGEST)


def _transcript(answer: bytes, challenge: bytes) -> tuple[ChallengeAnswer, bytes, bytes]:
    a, c = decode(answer), decode(challenge)
    assert isinstance(a.body, ChallengeAnswer) and c.request_digest is not None
    return a.body, c.body.nonce, c.request_digest.digest  # type: ignore[union-attr]


def test_reference_secret_key_answer_verifies() -> None:
    answer, nonce, digest = _transcript(ANS1, CHAL1)
    verify_answer(answer, b"secret", nonce, digest)
    with pytest.raises(AuthError):
        verify_answer(answer, b"secreT", nonce, digest)
    with pytest.raises(AuthError):
        verify_answer(answer, b"secret", nonce[::-1], digest)


def test_reference_rsa_answer_verifies() -> None:
    answer, nonce, digest = _transcript(ANS2, CHAL2)
    verify_answer(answer, PUBKEY, nonce, digest)
    with pytest.raises(AuthError):
        verify_answer(answer, PUBKEY, nonce, digest[:-1] + b"\x00")


@pytest.mark.parametrize("alg", [MAC_MD5, MAC_SHA1, MAC_SHA256, MAC_HMAC_SHA1, MAC_HMAC_SHA256])
def test_every_keyed_mac(alg: int) -> None:
    secret = b"s3cret"
    mac = keyed_mac(alg, secret, DATA)
    if alg in (MAC_HMAC_SHA1, MAC_HMAC_SHA256):  # matches the standard HMAC
        assert mac == hmac.new(secret, DATA, "sha1" if alg == MAC_HMAC_SHA1 else "sha256").digest()
    answer = ChallengeAnswer(
        "HS_SECKEY", "0.NA/88.166", 300, encode_secret_key_mac(SecretKeyMac(alg, mac))
    )
    verify_answer(answer, secret, NONCE, DIGEST)
    with pytest.raises(AuthError):
        verify_answer(answer, b"other", NONCE, DIGEST)


def test_pbkdf2_answer() -> None:
    salt = os.urandom(16)
    mac = pbkdf2_mac(b"s3cret", DATA, salt, 10_000, 160)
    signed = encode_secret_key_mac(SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, mac, salt, 10_000, 160))
    answer = ChallengeAnswer("HS_SECKEY", "0.NA/88.166", 300, signed)
    verify_answer(answer, b"s3cret", NONCE, DIGEST)
    with pytest.raises(AuthError):
        verify_answer(answer, b"s3creT", NONCE, DIGEST)


@pytest.mark.parametrize(
    ("iterations", "bits", "named"),
    [(10**9, 160, "iterations"), (100_001, 160, "iterations"), (10_000, 168, "length")],
)
def test_pbkdf2_refuses_costs_beyond_the_caps(iterations: int, bits: int, named: str) -> None:
    """The answer names its own cost: above 100,000 iterations or 160 bits it is refused
    before any PBKDF2 runs."""
    mac = SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, b"x" * 20, b"s", iterations, bits)
    signed = encode_secret_key_mac(mac)
    with pytest.raises(AuthError, match=named):
        verify_answer(ChallengeAnswer("HS_SECKEY", "h", 1, signed), b"k", NONCE, DIGEST)


def test_pbkdf2_at_the_caps_is_checked() -> None:
    salt = os.urandom(8)
    mac = pbkdf2_mac(b"s3cret", DATA, salt, 100_000, 160)
    signed = encode_secret_key_mac(SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, mac, salt, 100_000, 160))
    verify_answer(ChallengeAnswer("HS_SECKEY", "h", 1, signed), b"s3cret", NONCE, DIGEST)


@pytest.mark.parametrize(("name", "alg"), [("SHA-256", hashes.SHA256()), ("SHA1", hashes.SHA1())])
def test_rsa_signatures(name: str, alg: hashes.HashAlgorithm) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pub = key.public_key().public_numbers()
    key_data = encode_public_key(RsaPublicKey(pub.e, pub.n))
    sig = key.sign(DATA, padding.PKCS1v15(), alg)
    answer = ChallengeAnswer(
        "HS_PUBKEY", "0.NA/88.166", 300, encode_signature(PublicKeySignature(name, sig))
    )
    verify_answer(answer, key_data, NONCE, DIGEST)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    on = other.public_numbers()
    with pytest.raises(AuthError):
        verify_answer(answer, encode_public_key(RsaPublicKey(on.e, on.n)), NONCE, DIGEST)


def test_dsa_signature() -> None:
    key = dsa.generate_private_key(key_size=2048)
    n = key.public_key().public_numbers()
    key_data = encode_public_key(
        DsaPublicKey(n.parameter_numbers.q, n.parameter_numbers.p, n.parameter_numbers.g, n.y)
    )
    sig = key.sign(DATA, hashes.SHA256())
    answer = ChallengeAnswer(
        "HS_PUBKEY", "h", 1, encode_signature(PublicKeySignature("SHA-256", sig))
    )
    verify_answer(answer, key_data, NONCE, DIGEST)


@pytest.mark.parametrize("signed", [b"", b"\x02", b"\x7f" + b"x" * 20, b"\x02" + b"x" * 19])
def test_malformed_secret_key_answers(signed: bytes) -> None:
    with pytest.raises(AuthError):
        verify_answer(ChallengeAnswer("HS_SECKEY", "h", 1, signed), b"k", NONCE, DIGEST)


def test_unknown_auth_type() -> None:
    with pytest.raises(AuthError, match="unknown authentication type"):
        verify_answer(ChallengeAnswer("HS_MAGIC", "h", 1, b""), b"k", NONCE, DIGEST)


def test_identity_text() -> None:
    i = Identity.parse("300:0.NA/88.166")
    assert (i.handle, i.index, str(i)) == ("0.NA/88.166", 300, "300:0.NA/88.166")
    with pytest.raises(ValueError):
        Identity.parse("0.NA/88.166")


def test_pbkdf2_answers_are_checked_off_the_event_loop() -> None:
    """A PBKDF2 answer at the caps costs tens of milliseconds: the loop keeps turning
    while it is checked, and beyond the queue answers are refused as busy."""
    salt = os.urandom(8)
    mac = pbkdf2_mac(b"s3cret", DATA, salt, 100_000, 160)
    signed = encode_secret_key_mac(SecretKeyMac(MAC_PBKDF2_HMAC_SHA1, mac, salt, 100_000, 160))

    async def go() -> None:
        ticks = 0
        done = asyncio.Event()

        async def ticker() -> None:
            nonlocal ticks
            while not done.is_set():
                ticks += 1
                await asyncio.sleep(0)

        t = asyncio.create_task(ticker())
        await check_secret_key(b"s3cret", signed, DATA)
        done.set()
        await t
        assert ticks > 1  # inline, the ticker would not have run until the check ended
        with pytest.raises(AuthError):
            await check_secret_key(b"wrong", signed, DATA)
        checks = [check_secret_key(b"s3cret", signed, DATA) for _ in range(PBKDF2_CHECKS.queue)]
        running = [asyncio.create_task(c) for c in checks]
        await asyncio.sleep(0)  # let them all take their places in the queue
        with pytest.raises(AuthBusy):
            await check_secret_key(b"s3cret", signed, DATA)
        await asyncio.gather(*running)
        assert PBKDF2_CHECKS.waiting == 0

    asyncio.run(go())
