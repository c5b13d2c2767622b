"""What the Handle front doors (UDP, TCP, the HTTP tunnel) share: bytes of one request
in, bytes of one response out.

``respond`` returns the answer at once when it can (a resolution that hits L1: no
task, no await), a coroutine when it must wait for a lower tier, or None when
there is nothing to send (bytes too broken to address a reply, or a response
message sent to us). It never raises on bad input.

Who a request acts as is decided here, and nothing else grants it:
* a challenge (402) answered with the key, for that one request;
* a keyed session (SESSION_SETUP) whose identity a challenge proved, for requests that
  carry a fresh MAC made with the session key (resolver/handle_sessions.py);
* an IDIS login (LOGIN_ID_SYSTEM, or LOGIN with a password) on a TCP connection, for
  requests on that connection until it closes. A session id alone authorises nothing.
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
    ResolutionRequest,
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
from .codec.bodies import LoginRequest, ResolutionResponse
from .codec.codes import ENVELOPE_SIZE, UNKNOWN_SITE_SERIAL
from .codec.digest import digest_request
from .codec.message import ENVELOPE, PREAMBLE_SIZE, decode_envelope, is_encrypted
from .codec.wire import U32
from .core import Resolution, Resolver, answer
from .handle_admin import login_target, perform
from .handle_sessions import (
    MSG_NO_SESSION,
    Secured,
    SessionDoor,
    SessionRefusal,
)
from .ratelimit import RateLimiter

if TYPE_CHECKING:
    from idnode.registry.auth import Identity
    from idnode.registry.service import RegistryService
    from idnode.registry.sessions import Session, SessionStore

Reply = bytes | None | Coroutine[Any, Any, bytes | None]

_AT = int(OpFlag.AT)
_PO = int(OpFlag.PO)
_RD = int(OpFlag.RD)
_NOT_RD = 0xFFFFFFFF & ~_RD
_SECURE = int(OpFlag.CT | OpFlag.ENC)  # answers that must be signed or encrypted
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
NO_REGISTRY = "Registration over the Handle protocol is off on this node (it has no registry)"
LOGINS = (OpCode.LOGIN_ID_SYSTEM, OpCode.LOGIN)


@dataclasses.dataclass(frozen=True, slots=True)
class Registration:
    """What a node that takes writes over the Handle protocol has: the registry, the
    challenges and sessions it keeps, and the session door (MACs, signing, encryption)."""

    registry: RegistryService
    sessions: SessionStore
    door: SessionDoor


class Connection:
    """What one TCP connection remembers: who logged in on it (IDIS login)."""

    __slots__ = ("identity",)

    def __init__(self) -> None:
        self.identity: Identity | None = None


class HandleService:
    def __init__(
        self,
        core: Resolver,
        site: SiteInfo,
        registry: RegistryService | None = None,
        sessions: SessionStore | None = None,
        limiter: RateLimiter | None = None,
        door: SessionDoor | None = None,
    ) -> None:
        self.limiter = limiter
        self.core = core
        self.site = site
        self.registry = registry
        self.sessions = sessions
        self.door = door
        if door is None and sessions is not None:
            self.door = SessionDoor(sessions, registry, None)
        # Registration over the Handle protocol needs all three; without them the node
        # only resolves (and says so to administration requests).
        self.registration = (
            Registration(registry, sessions, self.door)
            if registry is not None and sessions is not None and self.door is not None
            else None
        )
        self.site_serial = site.serial
        self._latency = {d: metrics.LATENCY.labels(d) for d in ("udp", "tcp", "http")}
        self._tally = metrics.TALLY
        self._sample = 0

    def respond(
        self,
        wire: bytes,
        door: str,
        client: str = "",
        conn: Connection | None = None,
        *,
        counted: bool = False,
    ) -> Reply:
        """``counted``: the request was already charged to the client's rate (the plain
        request inside an encrypted one)."""
        t0 = time.perf_counter()
        if self.limiter is not None and client and not counted and not self.limiter.allow(client):
            return self._limited(wire, door, t0)
        if is_encrypted(wire):
            return self._encrypted(wire, door, client, conn)
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
            if q is not None and not (
                q.session_id
                or q.op_flags & _SECURE
                or (conn is not None and conn.identity is not None and not q.op_flags & _PO)
            ):
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
        return self._other(m, wire, door, t0, client, conn)

    async def _encrypted(
        self, wire: bytes, door: str, client: str, conn: Connection | None
    ) -> bytes | None:
        """An encrypted request: decrypt it with its session's key, then answer it."""
        if self.door is None:
            return self._envelope_error(wire, ResponseCode.SESSION_FAILED, "no sessions here", door)
        try:
            plain, _session = await self.door.decrypt_request(wire)
        except SessionRefusal as exc:
            return self._envelope_error(wire, exc.rc, exc.message, door)
        except Exception:  # the registry failed under the lookup: say so, as _guarded does
            log.exception("an encrypted request could not be opened")
            return self._envelope_error(
                wire, ResponseCode.ERROR, "the node could not complete the request; try again", door
            )
        r = self.respond(plain, door, client, conn, counted=True)
        if r is None or isinstance(r, bytes):
            return r
        return await r

    # --- resolution ------------------------------------------------------------------

    async def _resolve(self, q: ResolutionQuery, wire: bytes, door: str, t0: float) -> bytes | None:
        res = await self.core.resolve(q.handle, q.indexes, q.types, l1_checked=True)
        return self._resolution(q, wire, res, door, t0)

    async def _resolve_as(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        conn: Connection | None,
        session: Session | None,
        reg: Registration | None,
    ) -> bytes | None:
        """A resolution that may act as someone (a session, a login) or must be secured."""
        body = m.body
        if not isinstance(body, ResolutionRequest):  # pragma: no cover - by dispatch
            return await self._send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        q = ResolutionQuery(
            m.request_id,
            m.session_id,
            m.major_version,
            m.minor_version,
            m.op_flags,
            m.expiration,
            body.handle,
            body.indexes,
            body.types,
        )
        who: Identity | None = None
        if not m.op_flags & _PO:
            if (
                reg is not None
                and session is not None
                and session.identity is not None
                and m.credential
            ):
                try:
                    await reg.door.check_mac(session, m, wire)
                except SessionRefusal as exc:
                    return await self._send(m, wire, exc.rc, ErrorResponse(exc.message), door, t0)
                who = session.identity
            elif not m.session_id and conn is not None:
                who = conn.identity
        e = await self.core.entry(q.handle)
        if isinstance(e, Resolution):
            res = e
        else:
            allowed = (
                who is not None
                and reg is not None
                and e.values_wire is not None
                and await reg.registry.may_read_restricted(q.handle, e.values_wire, who)
            )
            res = answer(e, q.indexes, q.types, authorized=allowed)
        out = self._resolution(q, wire, res, door, t0)
        return await self._secure(m, wire, out, session)

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

    def _other(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str = "",
        conn: Connection | None = None,
    ) -> Reply:
        if not m.is_request:
            self._tally.request(door, m.op_code, -1)
            return None  # a response sent to a server: nothing to answer
        op = m.op_code
        reg = self.registration
        if op == OpCode.GET_SITE_INFO and not (m.session_id and reg is not None):
            # (A session id is checked only where sessions can exist.)
            return self._send(m, wire, ResponseCode.SUCCESS, SiteInfoResponse(self.site), door, t0)
        if reg is not None:
            return self._guarded(m, wire, door, t0, client, conn, reg)
        if op in ADMIN_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, NO_REGISTRY
        elif op in REPLICATION_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, "Replication is not supported"
        elif op == OpCode.RESOLUTION:
            return self._resolve_as(m, wire, door, t0, conn, None, None)
        else:
            rc, msg = ResponseCode.ERROR, f"Unknown opCode {op}"
        return self._send(m, wire, rc, ErrorResponse(msg), door, t0)

    async def _guarded(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        conn: Connection | None,
        reg: Registration,
    ) -> bytes | None:
        """``_dispatch``, answering RC 2 when the registry fails under it (a database
        that went away, a secret that will not unseal): the client hears of it at once
        instead of waiting out its timeout, and the worker lives on."""
        try:
            return await self._dispatch(m, wire, door, t0, client, conn, reg)
        except Exception:
            log.exception("request %d (op %d) failed", m.request_id, m.op_code)
            return self._reply(
                m,
                wire,
                ResponseCode.ERROR,
                ErrorResponse("the node could not complete the request; try again"),
                door,
                t0,
            )

    async def _dispatch(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        conn: Connection | None,
        reg: Registration,
    ) -> bytes | None:
        op = m.op_code
        session: Session | None = None
        if m.session_id and op != OpCode.SESSION_SETUP:
            # A session id must name a live session or a pending challenge (an answer
            # to a challenge that never was, or expired, is a session that timed out).
            session, pending = await reg.sessions.lookup(m.session_id)
            if session is None and not pending:
                return await self._send(
                    m, wire, ResponseCode.SESSION_TIMEOUT, ErrorResponse(MSG_NO_SESSION), door, t0
                )
        if op == OpCode.RESOLUTION:
            return await self._resolve_as(m, wire, door, t0, conn, session, reg)
        if op == OpCode.GET_SITE_INFO:
            return await self._send(
                m, wire, ResponseCode.SUCCESS, SiteInfoResponse(self.site), door, t0, session
            )
        if op in AUTHENTICATED_OPS:
            return await self._authenticated(m, wire, door, t0, client, conn, session, reg)
        if op == OpCode.CHALLENGE_RESPONSE:
            return await self._answer(m, wire, door, t0, conn, session, reg)
        if op == OpCode.VERIFY_RESPONSE:
            return await self._verify(m, wire, door, t0, reg)
        if op == OpCode.LOGIN:
            return await self._password_login(m, wire, door, t0, conn, reg)
        if op == OpCode.SESSION_SETUP:
            rc, body, opened = await reg.door.setup(m, client)
            return await self._send(m, wire, rc, body, door, t0, opened, opened=opened is not None)
        if op == OpCode.SESSION_EXCHANGEKEY:
            rc, body = await reg.door.exchange_key(m, session, client)
            return await self._send(m, wire, rc, body, door, t0, session)
        if op == OpCode.SESSION_TERMINATE:
            rc, body = await reg.door.terminate(m, wire, session)
            return await self._send(m, wire, rc, body, door, t0, None)
        if op in REPLICATION_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, "Replication is not supported"
        else:
            rc, msg = ResponseCode.ERROR, f"Unknown opCode {op}"
        return await self._send(m, wire, rc, ErrorResponse(msg), door, t0, session)

    async def _send(
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
        out = self._reply(m, wire, rc, body, door, t0, session if opened else None)
        return await self._secure(m, wire, out, session)

    def _reply(
        self,
        m: Message,
        wire: bytes,
        rc: int,
        body: Any,
        door: str,
        t0: float,
        opened: Session | None = None,
    ) -> bytes:
        digest = digest_request(wire) if m.op_flags & _RD else None
        res = response_to(m, rc, body, site_info_serial=self.site_serial, request_digest=digest)
        if opened is not None:
            res = dataclasses.replace(res, session_id=opened.id)
        out = encode(res)
        self._tally.request(door, m.op_code, rc)
        self._latency[door].observe(time.perf_counter() - t0)
        return out

    async def _secure(
        self, m: Message, wire: bytes, out: bytes | None, session: Session | None
    ) -> bytes | None:
        if out is None or not m.op_flags & _SECURE or self.door is None:
            return out
        how = Secured(
            certify=bool(m.op_flags & OpFlag.CT),
            encrypt=bool(m.op_flags & OpFlag.ENC),
            session=session,
            advertised=decode_envelope(wire).advertised_version,
        )
        return await self.door.secure(out, how)

    # --- authenticated operations ------------------------------------------------------

    async def _authenticated(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        conn: Connection | None,
        session: Session | None,
        reg: Registration,
    ) -> bytes | None:
        who: Identity | None = None
        if session is not None and session.identity is not None:
            try:
                await reg.door.check_mac(session, m, wire)
            except SessionRefusal as exc:
                log.info("session %d: request refused: %s", session.id, exc.message)
                return await self._send(m, wire, exc.rc, ErrorResponse(exc.message), door, t0)
            who = session.identity
        elif (
            not m.session_id
            and conn is not None
            and conn.identity is not None
            and m.op_code != OpCode.LOGIN_ID_SYSTEM  # a login proves itself afresh
        ):
            who = conn.identity
        if who is None:
            return await self._challenge(m, wire, door, t0, client, session, reg)
        if m.op_code == OpCode.LOGIN_ID_SYSTEM and conn is not None:
            conn.identity = who
        rc, body = await self._execute(reg, m, who)
        return await self._result(m, m, wire, rc, body, door, t0, session)

    async def _challenge(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        session: Session | None,
        reg: Registration,
    ) -> bytes | None:
        from idnode.registry.sessions import SessionLimit

        digest = digest_request(wire)
        try:
            sid, nonce = await reg.sessions.challenge(
                wire, digest.digest, session.id if session is not None else 0, client
            )
        except SessionLimit as exc:
            return await self._send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        res = response_to(
            m,
            ResponseCode.AUTHENTICATION_NEEDED,
            Challenge(nonce),
            site_info_serial=self.site_serial,
            request_digest=digest,
        )
        self._tally.request(door, m.op_code, ResponseCode.AUTHENTICATION_NEEDED)
        out = encode(dataclasses.replace(res, session_id=sid))
        return await self._secure(m, wire, out, session)

    async def _answer(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        conn: Connection | None,
        session: Session | None,
        reg: Registration,
    ) -> bytes | None:
        """CHALLENGE_RESPONSE. ``session``: the keyed session under the answer's id, as
        the dispatch found it (None for a bare challenge)."""
        from idnode.registry.auth import AuthBusy, AuthError, Identity, check_answer

        if not isinstance(m.body, ChallengeAnswer):  # pragma: no cover - by dispatch
            return await self._send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        pending = await reg.sessions.take(m.session_id) if m.session_id else None
        if pending is None:
            return await self._send(
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
            key = await reg.registry.key_for(who, m.body.auth_type)
            await check_answer(m.body, key, pending.nonce, pending.digest)
        except AuthBusy as exc:
            return await self._send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        except AuthError as exc:
            log.info("authentication of %s failed: %s", who, exc)
            await reg.registry.credentials.failed_login(who, login_target(request.body), str(exc))
            return await self._send(
                m,
                wire,
                ResponseCode.AUTHENTICATION_FAILED,
                ErrorResponse(f"authentication failed: {exc}"),
                door,
                t0,
            )
        if session is not None:
            # A challenge inside a keyed session. The waiting request must carry the
            # session's MAC, checked first: only a request made with the session key
            # may make the session act as the identity the client claimed at setup.
            # (Left open, as in the reference: whoever holds the session key and can
            # get the claimed identity's owner to sign this challenge gains the session;
            # the signature covers the request's digest, so the owner signs knowingly.)
            try:
                await reg.door.check_mac(session, request, pending.request)
            except SessionRefusal as exc:
                log.info("session %d: challenged request refused: %s", session.id, exc.message)
                return await self._send(m, wire, exc.rc, ErrorResponse(exc.message), door, t0)
            if session.claimed is not None and reg.registry.same_identity(session.claimed, who):
                await reg.sessions.authenticate(session, who)
                session = dataclasses.replace(session, identity=who)
        if request.op_code in LOGINS and conn is not None:
            conn.identity = who
        rc, body = await self._execute(reg, request, who)
        # The answer's request id (the client waits on it) with the original operation;
        # flags (certify, encrypt, digest) as the answer asked, as the client checks them.
        original = dataclasses.replace(
            request,
            request_id=m.request_id,
            session_id=m.session_id,
            op_flags=m.op_flags,
            major_version=m.major_version,
            minor_version=m.minor_version,
        )
        return await self._result(original, m, wire, rc, body, door, t0, session)

    async def _password_login(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        conn: Connection | None,
        reg: Registration,
    ) -> bytes | None:
        """IDIS LOGIN (2000): a user name and password, for the TCP connection."""
        from idnode.registry.auth import Identity

        body = m.body
        if conn is None:
            return await self._send(
                m,
                wire,
                ResponseCode.OPERATION_NOT_SUPPORTED,
                ErrorResponse("log in over TCP: a login authorises the connection it is made on"),
                door,
                t0,
            )
        if not isinstance(body, LoginRequest):
            return await self._send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        try:
            who = (
                Identity.parse(body.username)
                if ":" in body.username
                else Identity(body.username, 300)
            )
        except ValueError as exc:
            return await self._send(
                m, wire, ResponseCode.AUTHENTICATION_FAILED, ErrorResponse(str(exc)), door, t0
            )
        if not await reg.registry.check_password(who, body.password.encode()):
            log.info("password login of %s failed", who)
            await reg.registry.credentials.failed_login(
                who, login_target(m.body), "wrong password (LOGIN)"
            )
            return await self._send(
                m,
                wire,
                ResponseCode.AUTHENTICATION_FAILED,
                ErrorResponse("wrong username or password"),
                door,
                t0,
            )
        conn.identity = who
        log.info("%s logged in with a password", who)
        return await self._send(
            m, wire, ResponseCode.SUCCESS, ResolutionResponse(body.username, ()), door, t0
        )

    async def _verify(
        self, m: Message, wire: bytes, door: str, t0: float, reg: Registration
    ) -> bytes | None:
        """VERIFY_RESPONSE (201): does this HS_SECKEY answer prove the key stored here?"""
        from idnode.registry.auth import AuthBusy, AuthError, Identity, check_secret_key
        from idnode.resolver.codec.auth import signed_data

        body = m.body
        if not isinstance(body, VerifyAuthRequest):  # pragma: no cover - by dispatch
            return await self._send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        try:
            secret = await reg.registry.key_for(Identity(body.handle, body.index), "HS_SECKEY")
            await check_secret_key(
                secret, body.signed_response, signed_data(body.nonce, body.digest.digest)
            )
            valid = True
        except AuthBusy as exc:
            return await self._send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        except AuthError:
            valid = False
        return await self._send(m, wire, ResponseCode.SUCCESS, VerifyAuthResponse(valid), door, t0)

    async def _execute(self, reg: Registration, m: Message, who: Identity) -> tuple[int, Any]:
        if m.op_code == OpCode.LOGIN_ID_SYSTEM:
            return ResponseCode.SUCCESS, Empty()
        try:
            return await perform(reg.registry, m, who)
        except Exception:  # the store failed: say so; never leave the client hanging
            log.exception("registry operation failed")
            return ResponseCode.ERROR, ErrorResponse("the registry could not complete the write")

    async def _result(
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
        self._tally.request(door, m.op_code, rc)
        self._latency[door].observe(time.perf_counter() - t0)
        digest = digest_request(wire) if m.op_flags & _RD else None
        if rc == ResponseCode.SUCCESS and isinstance(body, ListResponse):
            msgs = list_responses(
                m, list(body.handles), site_info_serial=self.site_serial, request_digest=digest
            )
            out = b"".join(encode(x) for x in msgs)
        else:
            out = encode(
                response_to(m, rc, body, site_info_serial=self.site_serial, request_digest=digest)
            )
        return await self._secure(m, wire, out, session)

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

    def _envelope_error(self, wire: bytes, rc: int, reason: str, door: str) -> bytes | None:
        """An error answer addressed from the envelope alone (the message is unreadable)."""
        if len(wire) < ENVELOPE_SIZE:
            return None
        major, minor, _f, _sm, session, rid, _seq, _len = ENVELOPE.unpack_from(wire)
        self._tally.request(door, 0, rc)
        return encode(
            Message(
                op_code=0,
                body=ErrorResponse(reason[:_MAX_REASON]),
                response_code=rc,
                op_flags=_AT,
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
        reason = exc.reason[:_MAX_REASON]
        # The reference answers a SESSION_SETUP it cannot read with SESSION_FAILED.
        rc = (
            ResponseCode.SESSION_FAILED
            if op == OpCode.SESSION_SETUP
            else ResponseCode.PROTOCOL_ERROR
        )
        self._tally.request(door, op, rc)
        return encode(
            Message(
                op_code=op,
                body=ErrorResponse(reason),
                response_code=rc,
                op_flags=_AT,
                request_id=rid,
                session_id=session,
                major_version=major,
                minor_version=minor,
                site_info_serial=UNKNOWN_SITE_SERIAL,
            )
        )
