"""Answers to Handle requests: encoded, counted, and signed, MACed or encrypted as the
request asked. Every path of the Handle door answers through here, except the
resolution fast path (handle_service.py), which encodes its own."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from . import metrics
from .codec import (
    ErrorResponse,
    ListResponse,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    ResponseCode,
    decode,
    encode,
    list_responses,
    response_to,
)
from .codec.codes import ENVELOPE_SIZE, OC_RESERVED, UNKNOWN_SITE_SERIAL
from .codec.digest import digest_request
from .codec.message import ENVELOPE, decode_envelope
from .codec.wire import U32
from .handle_sessions import Secured

if TYPE_CHECKING:
    from idnode.registry.sessions import Session

    from .handle_sessions import SessionDoor

AT = int(OpFlag.AT)
RD = int(OpFlag.RD)
SECURE = int(OpFlag.CT | OpFlag.ENC)  # answers that must be signed or encrypted
MAX_REASON = 120  # keeps error answers to junk small (no amplification worth having)


class Replies:
    def __init__(self, site_serial: int, door: SessionDoor | None) -> None:
        self.site_serial = site_serial
        self.door = door
        self.latency = {d: metrics.LATENCY.labels(d) for d in ("udp", "tcp", "http")}
        self.tally = metrics.TALLY

    async def send(
        self,
        m: Message,
        wire: bytes,
        rc: int,
        body: Any,
        door: str,
        t0: float,
        session: Session | None = None,
        *,
        opened: bool = False,
    ) -> bytes | None:
        """Encode an answer to ``m``; sign, MAC or encrypt it as the request asked.
        ``opened``: the answer opens ``session`` (it carries the new session's id)."""
        out = self.reply(m, wire, rc, body, door, t0, session if opened else None)
        return await self.secure(m, wire, out, session)

    def reply(
        self,
        m: Message,
        wire: bytes,
        rc: int,
        body: Any,
        door: str,
        t0: float,
        opened: Session | None = None,
    ) -> bytes:
        digest = digest_request(wire) if m.op_flags & RD else None
        res = response_to(m, rc, body, site_info_serial=self.site_serial, request_digest=digest)
        if opened is not None:
            res = dataclasses.replace(res, session_id=opened.id)
        out = encode(res)
        self.tally.request(door, m.op_code, rc)
        self.latency[door].observe(time.perf_counter() - t0)
        return out

    async def secure(
        self, m: Message, wire: bytes, out: bytes | None, session: Session | None
    ) -> bytes | None:
        if out is None or not m.op_flags & SECURE or self.door is None:
            return out
        how = Secured(
            certify=bool(m.op_flags & OpFlag.CT),
            encrypt=bool(m.op_flags & OpFlag.ENC),
            session=session,
            advertised=decode_envelope(wire).advertised_version,
        )
        return await self.door.secure(out, how)

    async def result(
        self,
        m: Message,
        request: Message,
        wire: bytes,
        rc: int,
        body: Any,
        door: str,
        t0: float,
        session: Session | None,
    ) -> bytes | None:
        """Encode a result; a successful list streams in several messages (CN)."""
        self.tally.request(door, m.op_code, rc)
        self.latency[door].observe(time.perf_counter() - t0)
        digest = digest_request(wire) if m.op_flags & RD else None
        if rc == ResponseCode.SUCCESS and isinstance(body, ListResponse):
            msgs = list_responses(
                m, list(body.handles), site_info_serial=self.site_serial, request_digest=digest
            )
            out = b"".join(encode(x) for x in msgs)
        else:
            out = encode(
                response_to(m, rc, body, site_info_serial=self.site_serial, request_digest=digest)
            )
        return await self.secure(m, wire, out, session)

    def limited(self, wire: bytes, door: str, t0: float) -> bytes | None:
        try:
            m = decode(wire)
        except ProtocolError:
            return None  # no answer to junk from a client over its rate
        if not m.is_request:
            return None
        return self.reply(
            m,
            wire,
            ResponseCode.REQUEST_LIMIT_DAILY,
            ErrorResponse("request rate limit for this client exceeded; slow down"),
            door,
            t0,
        )

    def envelope_error(self, wire: bytes, rc: int, reason: str, door: str) -> bytes | None:
        """An error answer addressed from the envelope alone (the message is unreadable)."""
        if len(wire) < ENVELOPE_SIZE:
            return None
        major, minor, _f, _sm, session, rid, _seq, _len = ENVELOPE.unpack_from(wire)
        self.tally.request(door, 0, rc)
        return encode(
            Message(
                op_code=OC_RESERVED,  # the request's opcode is unreadable
                body=ErrorResponse(reason[:MAX_REASON]),
                response_code=rc,
                op_flags=AT,
                request_id=rid,
                session_id=session,
                major_version=major,
                minor_version=minor,
                site_info_serial=UNKNOWN_SITE_SERIAL,
            )
        )

    def malformed(self, wire: bytes, exc: ProtocolError, door: str) -> bytes | None:
        """RC 4 (501 for SESSION_SETUP) when the envelope can be read (so the reply can
        be addressed), else nothing."""
        metrics.MALFORMED.labels(door).inc()
        if len(wire) < ENVELOPE_SIZE:
            return None
        major, minor, _f, _sm, session, rid, _seq, _len = ENVELOPE.unpack_from(wire)
        op = U32.unpack_from(wire, ENVELOPE_SIZE)[0] if len(wire) >= ENVELOPE_SIZE + 4 else 0
        reason = exc.reason[:MAX_REASON]
        # The reference answers a SESSION_SETUP it cannot read with SESSION_FAILED.
        rc = (
            ResponseCode.SESSION_FAILED
            if op == OpCode.SESSION_SETUP
            else ResponseCode.PROTOCOL_ERROR
        )
        self.tally.request(door, op, rc)
        return encode(
            Message(
                op_code=op,
                body=ErrorResponse(reason),
                response_code=rc,
                op_flags=AT,
                request_id=rid,
                session_id=session,
                major_version=major,
                minor_version=minor,
                site_info_serial=UNKNOWN_SITE_SERIAL,
            )
        )
