"""Answers to Handle requests: encoded, counted, and signed, MACed or encrypted as the
request asked. Every path of the Handle door answers through here, except the
resolution fast path (handle_service.py), which encodes its own."""

from __future__ import annotations

import dataclasses
import time
from contextvars import ContextVar
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

    from .connlimits import LimitLog
    from .handle_sessions import SessionDoor
    from .ratelimit import RateLimiter

AT = int(OpFlag.AT)
RD = int(OpFlag.RD)
SECURE = int(OpFlag.CT | OpFlag.ENC)  # answers that must be signed or encrypted
MAX_REASON = 120  # keeps error answers to junk small (no amplification worth having)
CT_BYTE = 28  # the byte of a message (envelope included) holding the certify flag
CT_BIT = int(OpFlag.CT) >> 24
# Operations whose certified answer is signed with the server key even in a session.
SIGNED_IN_SESSION = (OpCode.SESSION_SETUP, OpCode.SESSION_EXCHANGEKEY)
# Whose signature budget a certified answer spends: the client address of the request
# being answered, set by HandleService.respond (the doors await, or start a task for,
# the answer at once, so it runs in a copy of the context the address was set in).
SIGNING_CLIENT: ContextVar[str] = ContextVar("idnode_signing_client", default="")


class Replies:
    def __init__(self, site_serial: int, door: SessionDoor | None) -> None:
        self.site_serial = site_serial
        self.door = door
        self.latency = {d: metrics.LATENCY.labels(d) for d in ("udp", "tcp", "http")}
        self.tally = metrics.TALLY
        self.signing: RateLimiter | None = None
        self.report: LimitLog | None = None

    def limit_signing(self, budget: RateLimiter, report: LimitLog) -> None:
        """Spend a token of ``budget`` (per client address) on each answer signed with
        the server key; without one the request is refused with RC 603."""
        self.signing = budget
        self.report = report

    def _server_signed(self, m: Message, session: Session | None) -> bool:
        """Whether the answer to ``m`` would be signed with the server key (an RSA, DSA
        or Ed25519 signature) rather than MAC'd with a session key (cheap)."""
        if not m.op_flags & OpFlag.CT or self.door is None or self.door.server_key is None:
            return False
        return session is None or session.key is None or m.op_code in SIGNED_IN_SESSION

    def _over_signing_budget(self, m: Message, session: Session | None) -> bool:
        budget = self.signing
        if budget is None or not self._server_signed(m, session):
            return False
        client = SIGNING_CLIENT.get()
        if budget.allow(client):
            return False
        if self.report is not None:
            self.report.bite(
                f"handle: {budget.rate:g} signed answers/s for one client address", client
            )
        return True

    def unsigned_refusal(self, m: Message, wire: bytes) -> bytes:
        """RC 603 to a certified request over its client's signature budget: not signed
        (that would spend what the budget keeps), and not the answer it asked for unsigned
        (a client asking for a certified answer must not get one it cannot check)."""
        digest = digest_request(wire) if m.op_flags & RD else None
        message = "certified answers (signed) for this client over their rate; slow down"
        res = response_to(
            m,
            ResponseCode.REQUEST_LIMIT_DAILY,
            ErrorResponse(message),
            site_info_serial=self.site_serial,
            request_digest=digest,
        )
        return encode(res)

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
        if self._over_signing_budget(m, session):
            return self.unsigned_refusal(m, wire)
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
