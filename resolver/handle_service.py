"""What the Handle front doors (UDP, TCP, the HTTP tunnel) share: bytes of one request
in, bytes of one response out.

``respond`` returns the answer at once when it can (a resolution that hits L1: no
task, no await), a coroutine when it must wait for a lower tier, or None when
there is nothing to send (bytes too broken to address a reply, or a response
message sent to us). It never raises on bad input.

Here: the resolution fast path, resolutions that act as someone, and the dispatch by
opcode. Who a request acts as, and what an administration request does, is
handle_admin.py's; sessions (setup, MACs, signing, encryption) are handle_sessions.py's;
encoding and securing the answers is handle_replies.py's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from idnode.registry.statistics import USAGE, prefix_text

from . import metrics
from .codec import (
    ErrorResponse,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    ReferralResponse,
    ResolutionQuery,
    ResolutionRequest,
    ResponseCode,
    SiteInfo,
    SiteInfoResponse,
    decode,
    decode_resolution,
    decode_values,
    encode,
    encode_digest,
    encode_resolution_answer,
    put_text,
)
from .codec.digest import digest_request
from .codec.message import PREAMBLE_SIZE, is_encrypted
from .core import Resolution, Resolver, answer
from .handle_admin import AdminRequests, Connection, Registration
from .handle_replies import CT_BIT, CT_BYTE, SIGNING_CLIENT, Replies
from .handle_sessions import (
    MSG_NO_SESSION,
    SessionDoor,
    SessionRefusal,
)
from .ratelimit import RateLimiter
from .ready_answers import ReadyAnswers, reply_for

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
_RECURSION_COUNT = 34  # envelope (20) + the header's recursionCount offset (14)
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


class HandleService:
    def __init__(
        self,
        core: Resolver,
        site: SiteInfo,
        registry: RegistryService | None = None,
        sessions: SessionStore | None = None,
        limiter: RateLimiter | None = None,
        door: SessionDoor | None = None,
        ready: ReadyAnswers | None = None,
    ) -> None:
        self.limiter = limiter
        # Answers to repeated L1-hit resolutions, kept but for the request id and expiration
        # (ready_answers.py); an empty table of no size when not given.
        self.ready = ready if ready is not None else ReadyAnswers(0)
        self.core = core
        self.site = site
        self.registry = registry
        self.sessions = sessions
        self.door = door
        if door is None and sessions is not None:
            self.door = SessionDoor(sessions, registry, None)
        # Registration over the Handle protocol needs all three; without them the node
        # only resolves (and says so to administration requests).
        self.site_serial = site.serial
        self.replies = Replies(self.site_serial, self.door)
        self.malformed = self.replies.malformed  # the TCP door answers bad frames itself
        self.admin = (
            AdminRequests(Registration(registry, sessions, self.door), self.replies)
            if registry is not None and sessions is not None and self.door is not None
            else None
        )
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
            return self.replies.limited(wire, door, t0)
        if len(wire) > CT_BYTE and wire[CT_BYTE] & CT_BIT:
            SIGNING_CLIENT.set(client)  # certified: its answer spends this client's budget
        if is_encrypted(wire):
            return self._encrypted(wire, door, client, conn)
        # A resolution answered before from L1, whose L1 entry is still the one it was
        # built from: the same answer, with this request's id and expiration.
        a = self.ready.get(wire)
        if (
            a is not None
            and (conn is None or conn.identity is None)
            and self.core.holds(a[0], a[1])
        ):
            self.ready.sent += 1
            self._tally.request(door, 1, a[4])
            USAGE.resolved_under(a[3], a[4])
            self._sample += 1
            if self._sample % metrics.LATENCY_SAMPLE == 0:
                self._latency[door].observe(time.perf_counter() - t0)
            return reply_for(a, wire)
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
                return self.replies.malformed(wire, exc, door)
            if q is not None and not (
                q.session_id
                or q.op_flags & _SECURE
                or (conn is not None and conn.identity is not None and not q.op_flags & _PO)
            ):
                key = self.core.key(q.handle)
                e = self.core.recall(key)
                if e is not None:
                    self._sample += 1
                    timed = self._sample % metrics.LATENCY_SAMPLE == 0
                    res = answer(e, q.indexes, q.types)
                    out = self._resolution(q, wire, res, door, t0 if timed else 0.0)
                    # RD: the digest hashes the expiration too. A logged-in connection
                    # never takes a kept answer, so it keeps none.
                    if not q.op_flags & _RD and (conn is None or conn.identity is None):
                        self.ready.put(
                            wire, key, e.values_wire, out, prefix_text(q.handle), res.response_code
                        )
                    return out
                return self._resolve(q, wire, door, t0)
        try:
            m = decode(wire)
        except ProtocolError as exc:
            return self.replies.malformed(wire, exc, door)
        return self._other(m, wire, door, t0, client, conn)

    async def _encrypted(
        self, wire: bytes, door: str, client: str, conn: Connection | None
    ) -> bytes | None:
        """An encrypted request: decrypt it with its session's key, then answer it."""
        if self.door is None:
            return self.replies.envelope_error(
                wire, ResponseCode.SESSION_FAILED, "no sessions here", door
            )
        try:
            plain, _session = await self.door.decrypt_request(wire)
        except SessionRefusal as exc:
            return self.replies.envelope_error(wire, exc.rc, exc.message, door)
        except Exception:  # the registry failed under the lookup: say so, as _guarded does
            log.exception("an encrypted request could not be opened")
            return self.replies.envelope_error(
                wire, ResponseCode.ERROR, "the node could not complete the request; try again", door
            )
        r = self.respond(plain, door, client, conn, counted=True)
        if r is None or isinstance(r, bytes):
            return r
        return await r

    # --- resolution ------------------------------------------------------------------

    async def _resolve(self, q: ResolutionQuery, wire: bytes, door: str, t0: float) -> bytes | None:
        res = await self.core.resolve(
            q.handle,
            q.indexes,
            q.types,
            l1_checked=True,
            flags=q.op_flags,
            recursion_count=wire[_RECURSION_COUNT],  # the header's recursionCount byte
        )
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
            return await self.replies.send(
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
                    return await self.replies.send(
                        m, wire, exc.rc, ErrorResponse(exc.message), door, t0
                    )
                who = session.identity
            elif not m.session_id and conn is not None:
                who = conn.identity
        e = await self.core.entry(q.handle, flags=m.op_flags, recursion_count=m.recursion_count)
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
        return await self.replies.secure(m, wire, out, session)

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
                    # a referral (302/303): the handle to ask instead and its HS_SITE values
                    body=ReferralResponse(res.referral, decode_values(res.values_wire))
                    if res.referral
                    else ErrorResponse(res.message),
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
        USAGE.resolved(q.handle, res.response_code)  # per-prefix statistics, reported upward
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
        admin = self.admin
        if op == OpCode.GET_SITE_INFO and not (m.session_id and admin is not None):
            # (A session id is checked only where sessions can exist.)
            return self.replies.send(
                m, wire, ResponseCode.SUCCESS, SiteInfoResponse(self.site), door, t0
            )
        if admin is not None:
            return self._guarded(m, wire, door, t0, client, conn, admin)
        if op in ADMIN_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, NO_REGISTRY
        elif op in REPLICATION_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, "Replication is not supported"
        elif op == OpCode.RESOLUTION:
            return self._resolve_as(m, wire, door, t0, conn, None, None)
        else:
            rc, msg = ResponseCode.ERROR, f"Unknown opCode {op}"
        return self.replies.send(m, wire, rc, ErrorResponse(msg), door, t0)

    async def _guarded(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        conn: Connection | None,
        admin: AdminRequests,
    ) -> bytes | None:
        """``_dispatch``, answering RC 2 when the registry fails under it (a database
        that went away, a secret that will not unseal): the client hears of it at once
        instead of waiting out its timeout, and the worker lives on."""
        try:
            return await self._dispatch(m, wire, door, t0, client, conn, admin)
        except Exception:
            log.exception("request %d (op %d) failed", m.request_id, m.op_code)
            return self.replies.reply(
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
        admin: AdminRequests,
    ) -> bytes | None:
        reg = admin.reg
        op = m.op_code
        session: Session | None = None
        if m.session_id and op != OpCode.SESSION_SETUP:
            # A session id must name a live session or a pending challenge (an answer
            # to a challenge that never was, or expired, is a session that timed out).
            session, pending = await reg.sessions.lookup(m.session_id)
            if session is None and not pending:
                return await self.replies.send(
                    m, wire, ResponseCode.SESSION_TIMEOUT, ErrorResponse(MSG_NO_SESSION), door, t0
                )
        if op == OpCode.RESOLUTION:
            return await self._resolve_as(m, wire, door, t0, conn, session, reg)
        if op == OpCode.GET_SITE_INFO:
            return await self.replies.send(
                m, wire, ResponseCode.SUCCESS, SiteInfoResponse(self.site), door, t0, session
            )
        if op in AUTHENTICATED_OPS:
            return await admin.authenticated(m, wire, door, t0, client, conn, session)
        if op == OpCode.CHALLENGE_RESPONSE:
            return await admin.answer(m, wire, door, t0, conn, session, client)
        if op == OpCode.VERIFY_RESPONSE:
            return await admin.verify(m, wire, door, t0, client)
        if op == OpCode.LOGIN:
            return await admin.password_login(m, wire, door, t0, conn, client)
        if op == OpCode.SESSION_SETUP:
            rc, body, opened = await reg.door.setup(m, client)
            return await self.replies.send(
                m, wire, rc, body, door, t0, opened, opened=opened is not None
            )
        if op == OpCode.SESSION_EXCHANGEKEY:
            rc, body = await reg.door.exchange_key(m, session, client)
            return await self.replies.send(m, wire, rc, body, door, t0, session)
        if op == OpCode.SESSION_TERMINATE:
            rc, body = await reg.door.terminate(m, wire, session)
            return await self.replies.send(m, wire, rc, body, door, t0, None)
        if op in REPLICATION_OPS:
            rc, msg = ResponseCode.OPERATION_NOT_SUPPORTED, "Replication is not supported"
        else:
            rc, msg = ResponseCode.ERROR, f"Unknown opCode {op}"
        return await self.replies.send(m, wire, rc, ErrorResponse(msg), door, t0, session)
