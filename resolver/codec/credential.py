"""The credential section that may follow a message body: a server's signature on a
certified answer (HS_SIGNED), or a MAC made with a session key (HS_MAC).

Layout, as the reference implementation writes it::

    version:1 (0)  reserved:1 (0)  flags:2
    str signer handle   int4 signer index   (HS_MAC: empty handle, index = session counter)
    str type            ("HS_SIGNED", "HS_MAC"; old servers: "HS_DSAPUBKEY")
    int4 section length
    bytes hash algorithm  ("SHA1", "MD5"; HS_MAC: one byte, the digest code, or a name)
    bytes signature

What the signature covers depends on the protocol version of the message it signs
(``signed_prefix``): up to 2.5 the header and body only; from 2.6 the envelope fields
that identify the exchange come first, so a signed answer cannot be replayed onto
another request. The ID-SDK (which speaks 2.10) always checks the 2.8 form.

This module is pure: it builds and checks the bytes covered. Signing with a private
key needs key material and lives outside the codec (registry/server_key.py).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from dataclasses import dataclass

from .errors import ProtocolError
from .wire import U32, Reader, put_blob, put_text

HS_SIGNED = "HS_SIGNED"
HS_MAC = "HS_MAC"
HS_DSAPUBKEY = "HS_DSAPUBKEY"  # the type old servers wrote for HS_SIGNED

MAX_CREDENTIAL = 16 * 1024

# Digest codes of an HS_MAC section (the reference's Common.HASH_CODE_*).
MAC_DIGEST_MD5 = 1
MAC_DIGEST_SHA1 = 2

_INT = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class Credential:
    type: str
    hash_algorithm: bytes  # b"SHA1" for HS_SIGNED; one digest-code byte for HS_MAC
    signature: bytes
    signer_handle: str = ""
    signer_index: int = 0  # HS_MAC: the session counter
    flags: int = 0
    version: int = 0

    @property
    def session_counter(self) -> int:
        return self.signer_index


def decode_credential(raw: bytes) -> Credential:
    """Parse a credential section (the bytes after its 4-byte length)."""
    r = Reader(raw)
    version = r.u8("credential version")
    r.u8("credential reserved byte")
    flags = r.u16("credential flags")
    signer = r.text("credential signer handle", 4096)
    signer_index = r.i32("credential signer index")
    kind = r.text("credential type", 64)
    section = r.length("credential signature section")
    end = r.pos + section
    s = Reader(raw, r.pos, end)
    alg = s.blob("credential hash algorithm", 64)
    sig = s.blob("credential signature", MAX_CREDENTIAL)
    return Credential(kind, alg, sig, signer, signer_index, flags, version)


def encode_credential(c: Credential) -> bytes:
    section = put_blob(c.hash_algorithm) + put_blob(c.signature)
    return (
        bytes((c.version, 0))
        + struct.pack(">H", c.flags)
        + put_text(c.signer_handle)
        + _INT.pack(c.signer_index)
        + put_text(c.type)
        + U32.pack(len(section))
        + section
    )


def signed_prefix(
    form: tuple[int, int],
    version: tuple[int, int],
    suggested: tuple[int, int],
    session_id: int,
    request_id: int,
    session_counter: int,
) -> bytes:
    """The envelope fields an HS_SIGNED signature covers before header and body.

    ``form`` is the protocol version whose rules apply (the reference decides by the
    message's version; a client that advertises 2.8 or later checks the 2.8 form
    whatever version the answer is in). ``version`` and ``suggested`` are the
    envelope's version bytes as the client reads them. Below 2.6 nothing is covered;
    2.6 as the reference's 2.6 writer left it (each int overwrote the last at offset
    4); 2.7 the version, session id, request id and counter; from 2.8 the suggested
    version too.
    """
    if form < (2, 6):
        return b""
    ints = _INT.pack(session_id) + _INT.pack(request_id) + _INT.pack(session_counter)
    if form >= (2, 8):
        return bytes((*version, *suggested)) + ints
    if form >= (2, 7):
        return bytes(version) + ints
    # 2.6: the reference assigned each write's length (4) to the offset, so the
    # session id landed at 2..5, then request id and counter both at 4..7.
    out = bytearray(2 + 12)
    out[0:2] = bytes(version)
    out[2:6] = _INT.pack(session_id)
    out[4:8] = _INT.pack(request_id)
    out[4:8] = _INT.pack(session_counter)
    return bytes(out)


def _mac(alg: bytes, key: bytes, data: bytes) -> bytes:
    """The reference's doMac: a digest code (one byte) or a name; digests wrap the key
    around the data (key ‖ data ‖ key), HMACs key on it."""
    name = alg.decode("ascii", "replace").upper().replace("-", "").replace("_", "")
    if len(alg) == 1:
        name = {MAC_DIGEST_MD5: "MD5", MAC_DIGEST_SHA1: "SHA1", 3: "SHA256"}.get(alg[0], "")
    if name in ("MD5", "SHA1", "SHA256"):
        return hashlib.new(name.lower(), key + data + key).digest()
    if name in ("HMACSHA1", "HMACSHA256"):
        return hmac.new(key, data, name[4:].lower()).digest()
    raise ProtocolError(f"HS_MAC: unknown algorithm {alg!r}")


def _digest(alg: bytes, data: bytes) -> bytes:
    name = {MAC_DIGEST_MD5: "md5", MAC_DIGEST_SHA1: "sha1", 3: "sha256"}.get(alg[0], "")
    if len(alg) != 1:
        name = alg.decode("ascii", "replace").lower().replace("-", "")
    if name not in ("md5", "sha1", "sha256"):
        raise ProtocolError(f"HS_MAC: unknown digest {alg!r}")
    return hashlib.new(name, data).digest()


def _broken_25(
    key: bytes,
    header_and_body: bytes,
    version: tuple[int, int],
    session_id: int,
    request_id: int,
    session_counter: int,
) -> bytes:
    """What the 2.5 and 2.6 writers actually MAC. They meant key ‖ version ‖ session id ‖
    request id ‖ counter ‖ header+body ‖ key, but assigned each int write's length (4)
    to the offset: the request id and counter land at offset 4, header+body is copied
    over them from offset 4, and the key after it. Replayed exactly, byte for byte: in
    practice these MACs cover neither the request id nor the counter (see
    registry/sessions.py for how replays are caught anyway)."""
    k, n = len(key), len(header_and_body)
    buf = bytearray(2 * k + n + 14)
    buf[0:k] = key
    buf[k], buf[k + 1] = version
    buf[k + 2 : k + 6] = _INT.pack(session_id)
    buf[4:8] = _INT.pack(request_id)
    buf[4:8] = _INT.pack(session_counter)
    buf[4 : 4 + n] = header_and_body
    buf[4 + n : 4 + n + k] = key
    return bytes(buf)


def mac_algorithm(version: tuple[int, int]) -> bytes:
    """The algorithm the reference puts on a MAC it sends in a message of ``version``."""
    if version >= (2, 7):
        return b"HMAC-SHA256"
    if version >= (2, 6):
        return b"SHA1"
    return bytes((MAC_DIGEST_SHA1,))


def mac_value(
    alg: bytes,
    key: bytes,
    header_and_body: bytes,
    *,
    version: tuple[int, int],
    suggested: tuple[int, int],
    session_id: int,
    request_id: int,
    session_counter: int,
) -> bytes:
    """The MAC a message of ``version`` carries, as the reference computes it: below 2.5
    over header+body; 2.5 and 2.6 the flawed form above; from 2.7 over the version (and
    from 2.8 the suggested version), session id, request id and counter, then
    header+body."""
    if version < (2, 5):
        return _mac(alg, key, header_and_body)
    if version < (2, 7):
        return _digest(
            alg,
            _broken_25(key, header_and_body, version, session_id, request_id, session_counter),
        )
    # From 2.7 the MAC covers the same prefix a signature does.
    prefix = signed_prefix(version, version, suggested, session_id, request_id, session_counter)
    return _mac(alg, key, prefix + header_and_body)


def session_mac(
    key: bytes,
    header_and_body: bytes,
    *,
    version: tuple[int, int],
    suggested: tuple[int, int],
    session_id: int,
    request_id: int,
    session_counter: int,
) -> Credential:
    """The HS_MAC credential the server puts on an answer in a session."""
    alg = mac_algorithm(version)
    mac = mac_value(
        alg,
        key,
        header_and_body,
        version=version,
        suggested=suggested,
        session_id=session_id,
        request_id=request_id,
        session_counter=session_counter,
    )
    return Credential(HS_MAC, alg, mac, "", session_counter)


def check_session_mac(
    key: bytes,
    header_and_body: bytes,
    credential: Credential,
    *,
    version: tuple[int, int],
    suggested: tuple[int, int],
    session_id: int,
    request_id: int,
) -> bool:
    """Does ``credential`` prove ``key`` over this message? (constant-time compare)"""
    if credential.type != HS_MAC or not credential.hash_algorithm:
        return False
    try:
        expected = mac_value(
            credential.hash_algorithm,
            key,
            header_and_body,
            version=version,
            suggested=suggested,
            session_id=session_id,
            request_id=request_id,
            session_counter=credential.session_counter,
        )
    except ProtocolError:
        return False
    return hmac.compare_digest(expected, credential.signature)
