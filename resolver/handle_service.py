"""What the Handle front doors (UDP, TCP, the HTTP tunnel) share: bytes of one request
in, bytes of one response out.

``respond`` returns the answer at once when it can (a resolution that hits L1: no
task, no await), a coroutine when it must wait for a lower tier, or None when
there is nothing to send (bytes too broken to address a reply, or a response
message sent to us). It never raises on bad input.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from . import metrics
from .codec import (
    Challenge,
    ChallengeAnswer,
    Empty,
    ErrorResponse,
    ListResponse,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    ResolutionQuery,
    ResponseCode,
    SiteInfo,
    SiteInfoResponse,
    VerifyAuthRequest,
    VerifyAuthResponse,
    decode,
    decode_resolution,
    encode,
    encode_digest,
    encode_resolution_answer,
    list_responses,
    put_text,
    response_to,
)
from .codec.codes import ENVELOPE_SIZE, UNKNOWN_SITE_SERIAL
from .codec.digest import digest_request
from .codec.message import ENVELOPE, PREAMBLE_SIZE
from .codec.wire import U32
from .core import Resolution, Resolver, answer
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from registry.service import RegistryService
    from registry.sessions import SessionStore

Reply = bytes | None | Coroutine[Any, Any, bytes | None]

_AT = int(OpFlag.AT)
_PO = int(OpFlag.PO)
_RD = int(OpFlag.RD)
_NOT_RD = 0xFFFFFFFF & ~_RD
_MAX_REASON = 120  # keeps error answers to junk small (no amplification worth having)

log = logging.getLogger("idnode.handle")

# Operations that need an authenticated administrator (a 402 challenge first).
AUTHENTICATED_OPS = frozenset(
    {
        OpCode.CREATE_HANDLE,
        OpCode.DELETE_HANDLE,
        OpCode.ADD_VALUE,
        OpCode.REMOVE_VALUE,
        OpCode.MODIFY_VALUE,
        OpCode.LIST_HANDLES,
        OpCode.LIST_NA,
        OpCode.HOME_NA,
        OpCode.UNHOME_NA,
        OpCode.LIST_HOMED_NAS,
        OpCode.LOGIN_ID_SYSTEM,
    }
)
ADMIN_OPS = AUTHENTICATED_OPS | frozenset(
    {
        OpCode.CHALLENGE_RESPONSE,
        OpCode.VERIFY_RESPONSE,
        OpCode.LOGIN,
        OpCode.SESSION_SETUP,
        OpCode.SESSION_TERMINATE,
        OpCode.SESSION_EXCHANGEKEY,
    }
)
REPLICATION_OPS = frozenset(
    {
        OpCode.GET_NEXT_TXN_ID,
        OpCode.RETRIEVE_TXN_LOG,
        OpCode.DUMP_HANDLES,
        OpCode.BACKUP_SERVER,
    }
)
NOT_YET = "Registration over the Handle protocol is not available on this node yet"


class HandleService:
    def __init__(
        self,
        core: Resolver,
        site: SiteInfo,
        registry: RegistryService | None = None,
        sessions: SessionStore | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.limiter = limiter
        self.core = core
        self.site = site
        self.registry = registry
        self.sessions = sessions
        self.site_serial = site.serial
        self._latency = {d: metrics.LATENCY.labels(d) for d in ("udp", "tcp", "http")}
        self._tally = metrics.TALLY
        self._sample = 0

    def respond(self, wire: bytes, door: str, client: str = "") -> Reply:
        t0 = time.perf_counter()
        if self.limiter is not None and client and not self.limiter.allow(client):
            return self._limited(wire, door, t0)
        n = len(wire)
        is_resolution = (
            n >= PREAMBLE_SIZE
            and wire[20:24] == b"\x00\x00\x00\x01"
            and wire[24:28] == b"\x00\x00\x00\x00"
        )
        if is_resolution:
            try:
                q = decode_resolution(wire)
            except ProtocolError as exc:
                return self.malformed(wire, exc, door)
            if q is not None:
                if q.session_id and self.sessions is not None and not q.op_flags & _PO:
                    # A session without PO: if it is authenticated, values that are not
                    # public may go to an administrator holding AUTHORIZED_READ.
                    return self._resolve_authorized(q, wire, door, t0)
                e = self.core.cached(q.handle)
                if e is not None:
                    self._sample += 1
                    timed = self._sample % metrics.LATENCY_SAMPLE == 0
                    return self._resolution(
                        q, wire, answer(e, q.indexes, q.types), door, t0 if timed else 0.0
                    )
                return self._resolve(q, wire, door, t0)
        try:
            m = decode(wire)
        except ProtocolError as exc:
            return self.malformed(wire, exc, door)
        return self._other(m, wire, door, t0)

    # --- resolution ------------------------------------------------------------------

    async def _resolve(self, q: ResolutionQuery, wire: bytes, door: str, t0: float) -> bytes | None:
        res = await self.core.resolve(q.handle, q.indexes, q.types, l1_checked=True)
        return self._resolution(q, wire, res, door, t0)

    async def _resolve_authorized(
        self, q: ResolutionQuery, wire: bytes, door: str, t0: float
    ) -> bytes | None:
        assert self.registry is not None and self.sessions is not None
        who = await self.sessions.identity(q.session_id)
        e = await self.core.entry(q.handle)
        if isinstance(e, Resolution):
            return self._resolution(q, wire, e, door, t0)
        allowed = (
            who is not None
            and e.values_wire is not None
            and await self.registry.may_read_restricted(q.handle, e.values_wire, who)
        )
        return self._resolution(
            q, wire, answer(e, q.indexes, q.types, authorized=allowed), door, t0
        )

    def _resolution(
        self, q: ResolutionQuery, wire: bytes, res: Resolution, door: str, t0: float
    ) -> bytes:
        digest = encode_digest(digest_request(wire)) if q.op_flags & _RD else b""
        if res.response_code == ResponseCode.SUCCESS:
            out = encode_resolution_answer(
                q,
                put_text(q.handle),
                res.values_wire,
                site_info_serial=self.site_serial,
                request_digest=digest,
            )
        else:
            flags = ((q.op_flags | _AT) & _NOT_RD) | (_RD if digest else 0)
            out = encode(
                Message(
                    op_code=OpCode.RESOLUTION,
                    body=ErrorResponse(res.message),
                    response_code=res.response_code,
                    op_flags=flags,
                    request_id=q.request_id,
                    session_id=q.session_id,
                    major_version=q.major_version,
                    minor_version=q.minor_version,
                    site_info_serial=self.site_serial,
                    expiration=q.expiration,
                    request_digest=digest_request(wire) if digest else None,
                )
            )
        self._tally.request(door, 1, res.response_code)
        if t0:
            self._latency[door].observe(time.perf_counter() - t0)
        return out

    # --- everything else -------------------------------------------------------------------

    def _other(self, m: Message, wire: bytes, door: str, t0: float) -> bytes | None:
        if not m.is_request:
            self._tally.request(door, m.op_code, -1)
            return None  # a response sent to a server: nothing to answer
        op = m.op_code
        if op == OpCode.GET_SITE_INFO:
            return self._reply(m, wire, ResponseCode.SUCCESS, SiteInfoResponse(self.site), door, t0)
        if self.registry is not None and self.sessions is not None:
            if op in AUTHENTICATED_OPS:
                return self._authenticated(m, wire, door, t0)  # type: ignore[return-value]
            if op == OpCode.CHALLENGE_RESPONSE:
                return self._answer(m, wire, door, t0)  # type: ignore[return-value]
            if op == OpCode.VERIFY_RESPONSE:
                return self._verify(m, wire, door, t0)  # type: ignore[return-value]
        if op in ADMIN_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, NOT_YET
        elif op in REPLICATION_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, "Replication is not supported"
        else:
            rc, msg = ResponseCode.ERROR, f"Unknown opCode {op}"
        return self._reply(m, wire, rc, ErrorResponse(msg), door, t0)

    def _reply(self, m: Message, wire: bytes, rc: int, body: Any, door: str, t0: float) -> bytes:
        digest = digest_request(wire) if m.op_flags & _RD else None
        out = encode(
            response_to(m, rc, body, site_info_serial=self.site_serial, request_digest=digest)
        )
        self._tally.request(door, m.op_code, rc)
        self._latency[door].observe(time.perf_counter() - t0)
        return out

    # --- authenticated operations ------------------------------------------------------

    async def _authenticated(self, m: Message, wire: bytes, door: str, t0: float) -> bytes:
        assert self.registry is not None and self.sessions is not None
        who = await self.sessions.identity(m.session_id) if m.session_id else None
        if who is None:
            digest = digest_request(wire)
            sid, nonce = await self.sessions.challenge(wire, digest.digest, m.session_id)
            res = response_to(
                m,
                ResponseCode.AUTHENTICATION_NEEDED,
                Challenge(nonce),
                site_info_serial=self.site_serial,
                request_digest=digest,
            )
            self._tally.request(door, m.op_code, ResponseCode.AUTHENTICATION_NEEDED)
            return encode(dataclasses.replace(res, session_id=sid))
        rc, body = await self._execute(m, who)
        return self._result(m, m, rc, body, door, t0)

    async def _answer(self, m: Message, wire: bytes, door: str, t0: float) -> bytes:
        from registry.auth import AuthError, Identity, verify_answer

        assert self.registry is not None and self.sessions is not None
        if not isinstance(m.body, ChallengeAnswer):  # pragma: no cover - by dispatch
            return self._reply(m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0)
        pending = await self.sessions.take(m.session_id) if m.session_id else None
        if pending is None:
            return self._reply(
                m,
                wire,
                ResponseCode.AUTHEN_TIMEOUT,
                ErrorResponse(
                    "no challenge is pending for this session: it expired or was answered"
                ),
                door,
                t0,
            )
        who = Identity(m.body.key_handle, m.body.key_index)
        request = decode(pending.request)
        try:
            key = await self.registry.key_for(who, m.body.auth_type)
            verify_answer(m.body, key, pending.nonce, pending.digest)
        except AuthError as exc:
            log.info("authentication of %s failed: %s", who, exc)
            await self.registry.audit_failed_login(who, request, str(exc))
            return self._reply(
                m,
                wire,
                ResponseCode.AUTHENTICATION_FAILED,
                ErrorResponse(f"authentication failed: {exc}"),
                door,
                t0,
            )
        await self.sessions.authenticate(m.session_id, who)
        rc, body = await self._execute(request, who)
        # The answer's request id (the client waits on it) with the original operation.
        original = dataclasses.replace(request, request_id=m.request_id, session_id=m.session_id)
        return self._result(original, m, rc, body, door, t0)

    async def _verify(self, m: Message, wire: bytes, door: str, t0: float) -> bytes:
        """VERIFY_RESPONSE (201): does this HS_SECKEY answer prove the key stored here?"""
        from registry.auth import AuthError, Identity, verify_secret_key
        from resolver.codec.auth import signed_data

        assert self.registry is not None
        body = m.body
        if not isinstance(body, VerifyAuthRequest):  # pragma: no cover - by dispatch
            return self._reply(m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0)
        try:
            secret = await self.registry.key_for(Identity(body.handle, body.index), "HS_SECKEY")
            verify_secret_key(
                secret, body.signed_response, signed_data(body.nonce, body.digest.digest)
            )
            valid = True
        except AuthError:
            valid = False
        return self._reply(m, wire, ResponseCode.SUCCESS, VerifyAuthResponse(valid), door, t0)

    async def _execute(self, m: Message, who: Any) -> tuple[int, Any]:
        assert self.registry is not None
        if m.op_code == OpCode.LOGIN_ID_SYSTEM:
            return ResponseCode.SUCCESS, Empty()
        try:
            return await self.registry.execute(m, who)
        except Exception:  # the store failed: say so; never leave the client hanging
            log.exception("registry operation failed")
            return ResponseCode.ERROR, ErrorResponse("the registry could not complete the write")

    def _result(
        self, m: Message, request: Message, rc: int, body: Any, door: str, t0: float
    ) -> bytes:
        """Encode a result; a successful list streams in several messages (CN)."""
        self._tally.request(door, m.op_code, rc)
        self._latency[door].observe(time.perf_counter() - t0)
        if rc == ResponseCode.SUCCESS and isinstance(body, ListResponse):
            msgs = list_responses(m, list(body.handles), site_info_serial=self.site_serial)
            return b"".join(encode(x) for x in msgs)
        return encode(response_to(m, rc, body, site_info_serial=self.site_serial))

    def _limited(self, wire: bytes, door: str, t0: float) -> bytes | None:
        try:
            m = decode(wire)
        except ProtocolError:
            return None  # no answer to junk from a client over its rate
        if not m.is_request:
            return None
        return self._reply(
            m,
            wire,
            ResponseCode.REQUEST_LIMIT_DAILY,
            ErrorResponse("request rate limit for this client exceeded; slow down"),
            door,
            t0,
        )

    def malformed(self, wire: bytes, exc: ProtocolError, door: str) -> bytes | None:
        """RC 4 when the envelope can be read (so the reply can be addressed), else nothing."""
        metrics.MALFORMED.labels(door).inc()
        if len(wire) < ENVELOPE_SIZE:
            return None
        major, minor, _f, _sm, session, rid, _seq, _len = ENVELOPE.unpack_from(wire)
        op = U32.unpack_from(wire, ENVELOPE_SIZE)[0] if len(wire) >= ENVELOPE_SIZE + 4 else 0
        reason = exc.reason[:_MAX_REASON]
        self._tally.request(door, op, ResponseCode.PROTOCOL_ERROR)
        return encode(
            Message(
                op_code=op,
                body=ErrorResponse(reason),
                response_code=ResponseCode.PROTOCOL_ERROR,
                op_flags=_AT,
                request_id=rid,
                session_id=session,
                major_version=major,
                minor_version=minor,
                site_info_serial=UNKNOWN_SITE_SERIAL,
            )
        )
