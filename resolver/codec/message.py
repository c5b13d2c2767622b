"""Whole messages: envelope (20) + header (24) + body + credential.

``decode(bytes) -> Message`` and ``encode(Message) -> bytes`` are the codec's front
door. A Message holds every envelope and header field except the lengths, which
encode computes and decode checks.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from typing import NamedTuple

from .bodies import Body, Empty, ListResponse, ResolutionRequest
from .codes import (
    ENVELOPE_SIZE,
    HEADER_SIZE,
    MAX_HANDLE_LENGTH,
    MAX_MESSAGE_LENGTH,
    UNKNOWN_SITE_SERIAL,
    EnvelopeFlag,
    OpCode,
    OpFlag,
    ResponseCode,
)
from .digest import RequestDigest, encode_digest
from .errors import ProtocolError
from .readers import read_body, read_resolution_request
from .wire import U32, Reader, put_text
from .writers import write_body

# Envelope and header read in one call: 44 bytes are on the path of every packet.
PREAMBLE = struct.Struct(">BBBBIIII" + "IIIHBBII")
ENVELOPE = struct.Struct(">BBBBIIII")
PREAMBLE_SIZE = ENVELOPE_SIZE + HEADER_SIZE
_NO_CREDENTIAL = b"\x00\x00\x00\x00"


@dataclass(frozen=True, slots=True)
class Envelope:
    major_version: int
    minor_version: int
    flags: int  # byte 2: compressed/encrypted/truncated + suggested major in the low bits
    suggested_minor_version: int
    session_id: int
    request_id: int
    sequence: int
    message_length: int

    @property
    def truncated(self) -> bool:
        return bool(self.flags & EnvelopeFlag.TRUNCATED)

    @property
    def suggested_major_version(self) -> int:
        return self.flags & 0x03

    @property
    def suggested_version(self) -> tuple[int, int]:
        """The version the envelope suggests, as readers take it (its own when none)."""
        if self.suggested_major_version:
            return self.suggested_major_version, self.suggested_minor_version
        return self.major_version, self.minor_version

    @property
    def advertised_version(self) -> tuple[int, int]:
        """The higher of the message's version and the one it suggests: clients of 2.8
        and later (the ID-SDK among them) check signatures in the form of that version."""
        return max((self.major_version, self.minor_version), self.suggested_version)


def decode_envelope(data: bytes) -> Envelope:
    if len(data) < ENVELOPE_SIZE:
        raise ProtocolError(f"envelope: {len(data)} bytes, needs {ENVELOPE_SIZE}")
    env = Envelope(*ENVELOPE.unpack_from(data))
    if env.message_length > MAX_MESSAGE_LENGTH:
        raise ProtocolError(
            f"envelope: message length {env.message_length} over the limit of {MAX_MESSAGE_LENGTH}"
        )
    return env


def encode_envelope(env: Envelope) -> bytes:
    return ENVELOPE.pack(
        env.major_version,
        env.minor_version,
        env.flags,
        env.suggested_minor_version,
        env.session_id,
        env.request_id,
        env.sequence,
        env.message_length,
    )


@dataclass(frozen=True, slots=True)
class Message:
    op_code: int
    body: Body = field(default_factory=Empty)
    response_code: int = 0
    op_flags: int = 0
    request_id: int = 0
    session_id: int = 0
    major_version: int = 2
    minor_version: int = 1
    envelope_flags: int = 0
    suggested_minor_version: int = 0
    sequence: int = 0
    site_info_serial: int = UNKNOWN_SITE_SERIAL
    recursion_count: int = 0
    reserved: int = 0
    expiration: int = 0
    request_digest: RequestDigest | None = None
    credential: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.response_code == ResponseCode.RESERVED

    def has(self, flag: OpFlag) -> bool:
        return bool(self.op_flags & flag)


def _frame(data: bytes) -> tuple[tuple[int, ...], int, bytes]:
    """Check the envelope and header against the bytes; return the fields, body end, credential."""
    n = len(data)
    if n >= ENVELOPE_SIZE:
        (mlen,) = U32.unpack_from(data, 16)
        if mlen > MAX_MESSAGE_LENGTH:
            raise ProtocolError(f"message length {mlen} over the limit of {MAX_MESSAGE_LENGTH}")
    if n < PREAMBLE_SIZE:
        raise ProtocolError(
            f"message of {n} bytes is shorter than envelope + header ({PREAMBLE_SIZE})"
        )
    fields = PREAMBLE.unpack_from(data)
    mlen, body_len = fields[7], fields[15]
    if ENVELOPE_SIZE + mlen != n:
        raise ProtocolError(f"envelope says {mlen} message bytes but {n - ENVELOPE_SIZE} follow it")
    if body_len > mlen - HEADER_SIZE:
        raise ProtocolError(
            f"body length {body_len} runs past the message ({mlen - HEADER_SIZE} bytes left)"
        )
    body_end = PREAMBLE_SIZE + body_len
    rest = n - body_end
    if not rest:
        return fields, body_end, b""
    if rest < 4:
        raise ProtocolError(f"{rest} stray bytes after the body, too few for a credential")
    (cred_len,) = U32.unpack_from(data, body_end)
    if cred_len != rest - 4:
        raise ProtocolError(
            f"credential length {cred_len} does not match the {rest - 4} bytes left"
        )
    return fields, body_end, bytes(data[body_end + 4 :])


def decode(data: bytes) -> Message:
    """Decode one complete message (envelope + message), as framed by TCP or reassembled UDP."""
    fields, body_end, credential = _frame(data)
    (
        major,
        minor,
        eflags,
        sminor,
        session,
        rid,
        seq,
        _mlen,
        op,
        rc,
        opflags,
        serial,
        rec,
        reserved,
        expiration,
        _blen,
    ) = fields
    body, digest = read_body(op, rc, opflags, Reader(data, PREAMBLE_SIZE, body_end))
    return Message(
        op,
        body,
        rc,
        opflags,
        rid,
        session,
        major,
        minor,
        eflags,
        sminor,
        seq,
        serial,
        rec,
        reserved,
        expiration,
        digest,
        credential,
    )


def encode(m: Message) -> bytes:
    """Encode a message with its envelope; lengths are computed here."""
    try:
        body = write_body(m.body)
        if m.response_code != ResponseCode.RESERVED and m.op_flags & OpFlag.RD:
            if m.request_digest is None:
                raise ProtocolError("RD is set on a response but no request digest was given")
            body = encode_digest(m.request_digest) + body
        elif m.request_digest is not None:
            raise ProtocolError("a request digest is only sent on a response with RD set")
        cred = U32.pack(len(m.credential)) + m.credential
        mlen = HEADER_SIZE + len(body) + len(cred)
        if mlen > MAX_MESSAGE_LENGTH:
            raise ProtocolError(
                f"message of {mlen} bytes is over the limit of {MAX_MESSAGE_LENGTH}"
            )
        return (
            PREAMBLE.pack(
                m.major_version,
                m.minor_version,
                m.envelope_flags,
                m.suggested_minor_version,
                m.session_id,
                m.request_id,
                m.sequence,
                mlen,
                m.op_code,
                m.response_code,
                m.op_flags,
                m.site_info_serial,
                m.recursion_count,
                m.reserved,
                m.expiration,
                len(body),
            )
            + body
            + cred
        )
    except (struct.error, OverflowError, UnicodeEncodeError) as exc:
        raise ProtocolError(f"cannot encode message: {exc}") from None


# --- the parts of an encoded message ----------------------------------------------------
#
# Signing, MACs and session encryption work on a message's bytes as they travel, so
# these take and give encoded messages (one message: envelope + header + body +
# credential) rather than Message objects.


def header_and_body(wire: bytes) -> bytes:
    """The bytes a request digest, a signature or a MAC covers (no envelope, no credential)."""
    if len(wire) < PREAMBLE_SIZE:
        raise ProtocolError(f"message of {len(wire)} bytes has no header")
    (body_len,) = U32.unpack_from(wire, ENVELOPE_SIZE + 20)
    end = PREAMBLE_SIZE + body_len
    if end > len(wire):
        raise ProtocolError("body length runs past the end of the message")
    return bytes(wire[ENVELOPE_SIZE:end])


def with_credential(wire: bytes, credential: bytes) -> bytes:
    """``wire`` (one encoded message) with its credential section replaced."""
    core = header_and_body(wire)
    message = core + U32.pack(len(credential)) + credential
    if len(message) > MAX_MESSAGE_LENGTH:
        raise ProtocolError(f"message of {len(message)} bytes is over the limit")
    return wire[:16] + U32.pack(len(message)) + message


def reseal(wire: bytes, payload: bytes, *, encrypted: bool) -> bytes:
    """A message with ``wire``'s envelope around ``payload`` (the message bytes, encrypted
    or plain), the ENCRYPTED flag and the length set to match."""
    flags = wire[2] | EnvelopeFlag.ENCRYPTED if encrypted else wire[2] & ~EnvelopeFlag.ENCRYPTED
    return bytes((wire[0], wire[1], flags, wire[3])) + wire[4:16] + U32.pack(len(payload)) + payload


_ENCRYPTED = int(EnvelopeFlag.ENCRYPTED)  # a plain int: IntFlag arithmetic costs ~1.5 µs


def is_encrypted(wire: bytes) -> bool:
    """Is the envelope's encrypted flag set? (On every request's path.)"""
    return len(wire) >= ENVELOPE_SIZE and bool(wire[2] & _ENCRYPTED)


def split_messages(data: bytes) -> list[bytes]:
    """Encoded messages laid end to end (a streamed answer) back into single messages."""
    out = []
    pos = 0
    while pos < len(data):
        if len(data) - pos < ENVELOPE_SIZE:
            raise ProtocolError("a partial envelope at the end of a message stream")
        (mlen,) = U32.unpack_from(data, pos + 16)
        end = pos + ENVELOPE_SIZE + mlen
        if end > len(data):
            raise ProtocolError("a message runs past the end of the stream")
        out.append(bytes(data[pos:end]))
        pos = end
    return out


def response_to(
    request: Message,
    response_code: int,
    body: Body,
    *,
    site_info_serial: int = UNKNOWN_SITE_SERIAL,
    request_digest: RequestDigest | None = None,
    extra_flags: int = 0,
) -> Message:
    """A response as the reference server shapes it.

    It answers in the request's version, echoes the request id, session, opCode and
    expiration, and keeps the request's flags with AT added. RD stays set only when
    a digest is supplied: the caller computes it (digest_request) when the request
    asked for one.
    """
    flags = (request.op_flags | OpFlag.AT | extra_flags) & ~OpFlag.RD
    if request_digest is not None:
        flags |= OpFlag.RD
    return Message(
        op_code=request.op_code,
        body=body,
        response_code=response_code,
        op_flags=flags,
        request_id=request.request_id,
        session_id=request.session_id,
        major_version=request.major_version,
        minor_version=request.minor_version,
        site_info_serial=site_info_serial,
        expiration=request.expiration,
        request_digest=request_digest,
    )


def list_responses(
    request: Message,
    handles: list[str] | tuple[str, ...],
    *,
    max_body: int = 16 * 1024,
    site_info_serial: int = UNKNOWN_SITE_SERIAL,
    request_digest: RequestDigest | None = None,
) -> list[Message]:
    """Answer LIST_HANDLES or LIST_HOMED_NAS as a stream of messages.

    Each message carries at most ``max_body`` bytes of handles (a longer handle
    travels alone, since a handle cannot be split); every message but
    the last has CN (continuous) set, as the reference server streams long lists.
    An empty list is one message with no handles. Every message carries
    ``request_digest`` when given (the reference makes each one a response to the
    request, and each takes the request's digest when it asked for one).
    """
    chunks: list[list[str]] = [[]]
    size = 4
    for h in handles:
        n = 4 + len(h.encode("utf-8"))
        if chunks[-1] and size + n > max_body:
            chunks.append([])
            size = 4
        chunks[-1].append(h)
        size += n
    out = []
    for i, chunk in enumerate(chunks):
        more = OpFlag.CN if i < len(chunks) - 1 else 0
        m = response_to(
            request,
            ResponseCode.SUCCESS,
            ListResponse(tuple(chunk)),
            site_info_serial=site_info_serial,
            extra_flags=more,
            request_digest=request_digest,
        )
        if not more:
            m = replace(m, op_flags=m.op_flags & ~OpFlag.CN)
        out.append(m)
    return out


# --- the hot path -----------------------------------------------------------------


class ResolutionQuery(NamedTuple):
    """The fields of a RESOLUTION request the hot path needs, without a full Message.

    A NamedTuple, not a frozen dataclass: it is built once per packet, and tuple
    construction costs a third of a frozen dataclass's here.
    """

    request_id: int
    session_id: int
    major_version: int
    minor_version: int
    op_flags: int
    expiration: int
    handle: str
    indexes: tuple[int, ...] = ()
    types: tuple[str, ...] = ()

    @property
    def request(self) -> ResolutionRequest:
        return ResolutionRequest(self.handle, self.indexes, self.types)


_NO_FILTERS = struct.Struct(">II")
_AT = int(OpFlag.AT)
_RD = int(OpFlag.RD)
_NOT_RD = 0xFFFFFFFF & ~_RD


def decode_resolution(data: bytes) -> ResolutionQuery | None:
    """Decode ``data`` if it is a RESOLUTION request; None for any other valid message.

    The same checks as ``decode`` (malformed bytes raise ProtocolError alike). The
    common request, a handle with no index or type filter and no credential, is
    read inline; anything else goes through the general readers.
    """
    n = len(data)
    if n >= PREAMBLE_SIZE:
        (
            major,
            minor,
            _ef,
            _sm,
            session,
            rid,
            _seq,
            mlen,
            op,
            rc,
            opflags,
            _serial,
            _rec,
            _res,
            expiration,
            body_len,
        ) = PREAMBLE.unpack_from(data)
        if (
            op == OpCode.RESOLUTION
            and rc == 0
            and mlen + ENVELOPE_SIZE == n
            and body_len + HEADER_SIZE + 4 == mlen
            and body_len >= 12
            and data[n - 4 : n] == _NO_CREDENTIAL
        ):
            (hlen,) = U32.unpack_from(data, PREAMBLE_SIZE)
            if hlen + 12 == body_len and hlen <= MAX_HANDLE_LENGTH:
                p = PREAMBLE_SIZE + 4 + hlen
                if _NO_FILTERS.unpack_from(data, p) == (0, 0):
                    try:
                        handle = data[PREAMBLE_SIZE + 4 : p].decode("utf-8")
                    except UnicodeDecodeError:
                        pass  # the general path below says where
                    else:
                        return ResolutionQuery(
                            rid, session, major, minor, opflags, expiration, handle
                        )
    fields, body_end, _cred = _frame(data)
    if fields[8] != OpCode.RESOLUTION or fields[9] != ResponseCode.RESERVED:
        decode(data)  # validate it all the same
        return None
    r = Reader(data, PREAMBLE_SIZE, body_end)
    req = read_resolution_request(r)
    r.expect_end("message body")
    return ResolutionQuery(
        fields[5],
        fields[4],
        fields[0],
        fields[1],
        fields[10],
        fields[14],
        req.handle,
        req.indexes,
        req.types,
    )


def encode_resolution_answer(
    q: ResolutionQuery,
    handle_wire: bytes,
    values_wire: bytes,
    *,
    site_info_serial: int = UNKNOWN_SITE_SERIAL,
    request_digest: bytes = b"",
) -> bytes:
    """A SUCCESS answer built from pre-encoded parts: one pack and one join.

    ``handle_wire`` is ``put_text(handle)``; ``values_wire`` is ``encode_values(...)``
    (count + values, as the cache holds it); ``request_digest`` is an already
    encoded digest (``encode_digest``), given when the request set RD.
    """
    # Plain ints: arithmetic on IntFlag members builds enum objects per call.
    flags = (q.op_flags | _AT) & _NOT_RD
    if request_digest:
        flags |= _RD
    body_len = len(request_digest) + len(handle_wire) + len(values_wire)
    return b"".join(
        (
            PREAMBLE.pack(
                q.major_version,
                q.minor_version,
                0,
                0,
                q.session_id,
                q.request_id,
                0,
                HEADER_SIZE + body_len + 4,
                1,  # OpCode.RESOLUTION
                1,  # ResponseCode.SUCCESS
                flags,
                site_info_serial,
                0,
                0,
                q.expiration,
                body_len,
            ),
            request_digest,
            handle_wire,
            values_wire,
            _NO_CREDENTIAL,
        )
    )


__all__ = [
    "Envelope",
    "Message",
    "ResolutionQuery",
    "decode",
    "decode_envelope",
    "decode_resolution",
    "encode",
    "encode_envelope",
    "encode_resolution_answer",
    "header_and_body",
    "is_encrypted",
    "list_responses",
    "put_text",
    "reseal",
    "response_to",
    "split_messages",
    "with_credential",
]
