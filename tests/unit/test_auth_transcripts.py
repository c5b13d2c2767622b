"""The reference client's answers to a 402 challenge decode, and verify, byte for byte.

The request digest of each admin request equals the digest in the server's challenge;
the HS_SECKEY MAC and the RSA signature verify over nonce ‖ digest; any changed byte
of the answer makes them fail (or the answer fail to decode).
"""

from __future__ import annotations

import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from idnode.resolver.codec import (
    AddValueRequest,
    Challenge,
    ChallengeAnswer,
    HandleValue,
    HashType,
    OpCode,
    OpFlag,
    ProtocolError,
    ResponseCode,
    RsaPublicKey,
    decode,
    decode_public_key,
    digest_request,
    encode,
    encode_public_key,
)
from idnode.resolver.codec.auth import (
    MAC_SHA1,
    decode_secret_key_mac,
    decode_signature,
    keyed_mac,
    signed_data,
)
from tests.vectors import HERE

NONCE = bytes(range(0x10, 0x20))


def _transcript() -> list[bytes]:
    text = (HERE / "handle-auth-transcripts.txt").read_text()
    return [bytes.fromhex(h) for h in re.findall(r"^([0-9a-f]{40,})$", text, re.M)]


REQ1, CHAL1, ANS1, PUBKEY, REQ2, CHAL2, ANS2 = _transcript()


@pytest.mark.parametrize("wire", [REQ1, REQ2])
def test_admin_request_decodes(wire: bytes) -> None:
    m = decode(wire)
    assert (m.op_code, m.major_version, m.minor_version, m.op_flags) == (102, 2, 5, 0x19000000)
    assert m.body == AddValueRequest(
        "20.500.12345/abc", (HandleValue(5, "EMAIL", b"a@b.c", 86400, 0, 1700000000, 0x0E),)
    )
    assert encode(m) == wire


@pytest.mark.parametrize(("req", "chal"), [(REQ1, CHAL1), (REQ2, CHAL2)])
def test_challenge_carries_the_request_digest(req: bytes, chal: bytes) -> None:
    c = decode(chal)
    assert c.response_code == ResponseCode.AUTHENTICATION_NEEDED
    assert c.session_id == 7 and c.has(OpFlag.RD)
    assert c.body == Challenge(NONCE)
    assert c.request_digest is not None and c.request_digest.hash_type == HashType.SHA1
    assert digest_request(req) == c.request_digest
    assert encode(c) == chal


def test_secret_key_answer_verifies() -> None:
    c, a = decode(CHAL1), decode(ANS1)
    assert a.op_code == OpCode.CHALLENGE_RESPONSE and a.session_id == 7
    assert isinstance(a.body, ChallengeAnswer)
    assert (a.body.auth_type, a.body.key_handle, a.body.key_index) == (
        "HS_SECKEY",
        "0.NA/20.500.12345",
        300,
    )
    mac = decode_secret_key_mac(a.body.signed_response)
    assert mac.algorithm == MAC_SHA1
    assert c.request_digest is not None
    data = signed_data(NONCE, c.request_digest.digest)
    assert keyed_mac(mac.algorithm, b"secret", data) == mac.mac
    assert keyed_mac(mac.algorithm, b"Secret", data) != mac.mac
    assert encode(a) == ANS1


def _rsa_key() -> rsa.RSAPublicKey:
    k = decode_public_key(PUBKEY)
    assert isinstance(k, RsaPublicKey)
    return rsa.RSAPublicNumbers(k.exponent, k.modulus).public_key()


def test_pubkey_value_round_trips() -> None:
    k = decode_public_key(PUBKEY)
    assert isinstance(k, RsaPublicKey) and k.exponent == 65537 and k.modulus.bit_length() == 1024
    assert encode_public_key(k) == PUBKEY


def test_rsa_answer_verifies() -> None:
    c, a = decode(CHAL2), decode(ANS2)
    assert isinstance(a.body, ChallengeAnswer) and a.body.auth_type == "HS_PUBKEY"
    assert a.body.key_index == 301
    sig = decode_signature(a.body.signed_response)
    assert sig.hash_algorithm == "SHA1"
    assert c.request_digest is not None
    _rsa_key().verify(
        sig.signature,
        signed_data(NONCE, c.request_digest.digest),
        padding.PKCS1v15(),
        hashes.SHA1(),
    )
    assert encode(a) == ANS2


def _verifies(answer_wire: bytes) -> bool:
    """Decode an answer and check it against exchange 1 or 2; False on any failure."""
    try:
        a = decode(answer_wire)
    except ProtocolError:
        return False
    if not isinstance(a.body, ChallengeAnswer) or a.op_code != OpCode.CHALLENGE_RESPONSE:
        return False
    chal = decode(CHAL1 if a.body.auth_type == "HS_SECKEY" else CHAL2)
    assert chal.request_digest is not None
    data = signed_data(NONCE, chal.request_digest.digest)
    try:
        if a.body.auth_type == "HS_SECKEY":
            if (a.body.key_handle, a.body.key_index) != ("0.NA/20.500.12345", 300):
                return False
            mac = decode_secret_key_mac(a.body.signed_response)
            return keyed_mac(mac.algorithm, b"secret", data) == mac.mac
        if a.body.auth_type == "HS_PUBKEY":
            if (a.body.key_handle, a.body.key_index) != ("0.NA/20.500.12345", 301):
                return False
            sig = decode_signature(a.body.signed_response)
            if sig.hash_algorithm != "SHA1":
                return False
            _rsa_key().verify(sig.signature, data, padding.PKCS1v15(), hashes.SHA1())
            return True
    except (ProtocolError, InvalidSignature):
        return False
    return False


@pytest.mark.parametrize("answer", [ANS1, ANS2], ids=["seckey", "pubkey"])
def test_any_changed_body_byte_fails(answer: bytes) -> None:
    assert _verifies(answer)
    body_start, body_end = 44, len(answer) - 4  # the header's own fields are not signed
    for i in range(body_start, body_end):
        changed = bytearray(answer)
        changed[i] ^= 0x01
        assert not _verifies(bytes(changed)), f"byte {i} changed and the answer still verified"
