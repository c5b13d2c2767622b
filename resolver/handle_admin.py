"""The administration half of the Handle door: who a request acts as, and what an
administration request (opcodes 100-105, 300-302, the IDIS logins) does.

Who a request acts as is decided here, and nothing else grants it:
* a challenge (402) answered with the key, for that one request;
* a keyed session (SESSION_SETUP) whose identity a challenge proved, for requests that
  carry a fresh MAC made with the session key (resolver/handle_sessions.py);
* an IDIS login (LOGIN_ID_SYSTEM, or LOGIN with a password) on a TCP connection, for
  requests on that connection until it closes. A session id alone authorises nothing.

What the request then does is only translated: the opcode and flags pick the registry
operation (``perform``), and its typed result becomes an empty body, the minted handle,
a list, or an error message (``written``, ``listed``).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from idnode.registry.auth import AuthBusy, AuthError, Identity, check_answer, check_secret_key
from idnode.registry.login_guard import Throttled
from idnode.registry.service import OUTCOME_UNKNOWN, UNAVAILABLE, outcome_unknown
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.sessions import SessionLimit

from .codec import (
    Challenge,
    ChallengeAnswer,
    CreateHandleResponse,
    Empty,
    ErrorResponse,
    ListResponse,
    Message,
    OpCode,
    OpFlag,
    ResponseCode,
    VerifyAuthRequest,
    VerifyAuthResponse,
    decode,
    encode,
    response_to,
)
from .codec import bodies as b
from .codec.auth import signed_data
from .codec.bodies import LoginRequest, ResolutionResponse
from .codec.digest import digest_request
from .handle_sessions import SessionDoor, SessionRefusal
from .logs import Repeats

if TYPE_CHECKING:
    from idnode.registry.results import Listing, WriteResult
    from idnode.registry.service import RegistryService
    from idnode.registry.sessions import Session, SessionStore

    from .handle_replies import Replies

log = logging.getLogger("idnode.handle")
_down = Repeats(log)  # a registry outage would otherwise log a line per request

LOGINS = (OpCode.LOGIN_ID_SYSTEM, OpCode.LOGIN)
Answer = tuple[int, b.Body]


def written(result: WriteResult, *, minted: bool = False) -> Answer:
    """A write's answer: empty, or for a mint the handle minted (CreateHandleResponse)."""
    if not result.ok:
        return result.code, ErrorResponse(result.message)
    return result.code, CreateHandleResponse(result.handle) if minted else Empty()


def listed(result: Listing) -> Answer:
    if not result.ok:
        return result.code, ErrorResponse(result.message)
    return result.code, ListResponse(result.handles)


async def perform(registry: RegistryService, m: Message, who: Identity) -> Answer:
    """Carry out one authenticated administration request as ``who``."""
    body = m.body
    if isinstance(body, b.CreateHandleRequest):
        mint = m.has(OpFlag.MINT)
        r = await registry.create(
            body.handle, body.values, who, overwrite=m.has(OpFlag.OVRW), mint=mint
        )
        return written(r, minted=mint)
    if isinstance(body, b.DeleteHandleRequest):
        return written(await registry.delete(body.handle, who))
    if isinstance(body, b.AddValueRequest):
        r = await registry.add_values(body.handle, body.values, who, overwrite=m.has(OpFlag.OVRW))
        return written(r)
    if isinstance(body, b.ModifyValueRequest):
        return written(await registry.modify_values(body.handle, body.values, who))
    if isinstance(body, b.RemoveValueRequest):
        return written(await registry.remove_values(body.handle, body.indexes, who))
    if isinstance(body, b.ListHandlesRequest):
        return listed(await registry.list_handles(body.handle, who))
    if isinstance(body, b.HomeNaRequest):
        return written(await registry.home(body.handle, who))
    if isinstance(body, b.UnhomeNaRequest):
        return written(await registry.unhome(body.handle, who))
    if isinstance(body, b.ListHomedNasRequest):
        return listed(await registry.list_homed(who))
    return ResponseCode.OPERATION_NOT_SUPPORTED, ErrorResponse("operation not supported")


def login_target(body: b.Body) -> str:
    """The handle a request that failed its login was acting on, for the audit log."""
    if isinstance(body, b.LoginIdSystemRequest):
        return body.user_handle
    return str(getattr(body, "handle", ""))


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


class AdminRequests:
    """Requests that act as someone: authenticated first, then carried out."""

    def __init__(self, reg: Registration, replies: Replies) -> None:
        self.reg = reg
        self.replies = replies

    async def authenticated(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        conn: Connection | None,
        session: Session | None,
    ) -> bytes | None:
        who: Identity | None = None
        if session is not None and session.identity is not None:
            try:
                await self.reg.door.check_mac(session, m, wire)
            except SessionRefusal as exc:
                log.info("session %d: request refused: %s", session.id, exc.message)
                return await self.replies.send(
                    m, wire, exc.rc, ErrorResponse(exc.message), door, t0
                )
            who = session.identity
        elif (
            not m.session_id
            and conn is not None
            and conn.identity is not None
            and m.op_code != OpCode.LOGIN_ID_SYSTEM  # a login proves itself afresh
        ):
            who = conn.identity
        if who is None:
            return await self._challenge(m, wire, door, t0, client, session)
        if m.op_code == OpCode.LOGIN_ID_SYSTEM and conn is not None:
            conn.identity = who
        rc, body = await self._execute(m, who)
        return await self.replies.result(m, m, wire, rc, body, door, t0, session)

    async def _challenge(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        client: str,
        session: Session | None,
    ) -> bytes | None:
        digest = digest_request(wire)
        try:
            sid, nonce = await self.reg.sessions.challenge(
                wire, digest.digest, session.id if session is not None else 0, client
            )
        except SessionLimit as exc:
            return await self.replies.send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        except Exception as exc:  # a challenge is kept in the registry: say it is down
            if not registry_unavailable(exc):
                raise
            _down.warning("issuing a challenge failed: registry unavailable (%s)", exc)
            return await self.replies.send(
                m, wire, ResponseCode.ERROR, ErrorResponse(UNAVAILABLE), door, t0
            )
        res = response_to(
            m,
            ResponseCode.AUTHENTICATION_NEEDED,
            Challenge(nonce),
            site_info_serial=self.replies.site_serial,
            request_digest=digest,
        )
        self.replies.tally.request(door, m.op_code, ResponseCode.AUTHENTICATION_NEEDED)
        out = encode(dataclasses.replace(res, session_id=sid))
        return await self.replies.secure(m, wire, out, session)

    async def answer(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        conn: Connection | None,
        session: Session | None,
        client: str = "",
    ) -> bytes | None:
        """CHALLENGE_RESPONSE. ``session``: the keyed session under the answer's id, as
        the dispatch found it (None for a bare challenge)."""
        if not isinstance(m.body, ChallengeAnswer):  # pragma: no cover - by dispatch
            return await self.replies.send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        who = Identity(m.body.key_handle, m.body.key_index)
        guard = self.reg.registry.credentials.guard
        try:
            # Before the challenge is taken: a throttled client may answer it later.
            guard.admit(client, who)
        except Throttled as exc:
            return await self._throttled(m, wire, door, t0, exc)
        pending = await self.reg.sessions.take(m.session_id) if m.session_id else None
        if pending is None:
            guard.passed(client, who)  # nothing was checked
            return await self.replies.send(
                m,
                wire,
                ResponseCode.AUTHEN_TIMEOUT,
                ErrorResponse(
                    "no challenge is pending for this session: it expired or was answered"
                ),
                door,
                t0,
            )
        request = decode(pending.request)
        try:
            key = await self.reg.registry.key_for(who, m.body.auth_type)
            await check_answer(m.body, key, pending.nonce, pending.digest)
        except AuthBusy as exc:
            guard.passed(client, who)  # not checked: no failure
            return await self.replies.send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        except AuthError as exc:
            log.info("authentication of %s failed: %s", who, exc)
            await self.reg.registry.credentials.failed_login(
                who, login_target(request.body), str(exc), client=client, door=door
            )
            return await self.replies.send(
                m,
                wire,
                ResponseCode.AUTHENTICATION_FAILED,
                ErrorResponse(f"authentication failed: {exc}"),
                door,
                t0,
            )
        guard.passed(client, who)
        if session is not None:
            # A challenge inside a keyed session. The waiting request must carry the
            # session's MAC, checked first: only a request made with the session key
            # may make the session act as the identity the client claimed at setup.
            # (Left open, as in the reference: whoever holds the session key and can
            # get the claimed identity's owner to sign this challenge gains the session;
            # the signature covers the request's digest, so the owner signs knowingly.)
            try:
                await self.reg.door.check_mac(session, request, pending.request)
            except SessionRefusal as exc:
                log.info("session %d: challenged request refused: %s", session.id, exc.message)
                return await self.replies.send(
                    m, wire, exc.rc, ErrorResponse(exc.message), door, t0
                )
            if session.claimed is not None and self.reg.registry.same_identity(
                session.claimed, who
            ):
                await self.reg.sessions.authenticate(session, who)
                session = dataclasses.replace(session, identity=who)
        if request.op_code in LOGINS and conn is not None:
            conn.identity = who
        rc, body = await self._execute(request, who)
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
        return await self.replies.result(original, m, wire, rc, body, door, t0, session)

    async def password_login(
        self,
        m: Message,
        wire: bytes,
        door: str,
        t0: float,
        conn: Connection | None,
        client: str = "",
    ) -> bytes | None:
        """IDIS LOGIN (2000): a user name and password, for the TCP connection."""
        body = m.body
        if conn is None:
            return await self.replies.send(
                m,
                wire,
                ResponseCode.OPERATION_NOT_SUPPORTED,
                ErrorResponse("log in over TCP: a login authorises the connection it is made on"),
                door,
                t0,
            )
        if not isinstance(body, LoginRequest):
            return await self.replies.send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        try:
            who = (
                Identity.parse(body.username)
                if ":" in body.username
                else Identity(body.username, 300)
            )
        except ValueError as exc:
            return await self.replies.send(
                m, wire, ResponseCode.AUTHENTICATION_FAILED, ErrorResponse(str(exc)), door, t0
            )
        try:
            ok = await self.reg.registry.check_password(
                who, body.password.encode(), client=client, door=f"{door} LOGIN"
            )
        except Throttled as exc:
            return await self._throttled(m, wire, door, t0, exc)
        if not ok:  # audited by check_password
            log.info("password login of %s failed", who)
            return await self.replies.send(
                m,
                wire,
                ResponseCode.AUTHENTICATION_FAILED,
                ErrorResponse("wrong username or password"),
                door,
                t0,
            )
        conn.identity = who
        log.info("%s logged in with a password", who)
        return await self.replies.send(
            m, wire, ResponseCode.SUCCESS, ResolutionResponse(body.username, ()), door, t0
        )

    async def verify(
        self, m: Message, wire: bytes, door: str, t0: float, client: str = ""
    ) -> bytes | None:
        """VERIFY_RESPONSE (201): does this HS_SECKEY answer prove the key stored here?
        A guess answered "no" is a failed authentication: throttled and audited."""
        body = m.body
        if not isinstance(body, VerifyAuthRequest):  # pragma: no cover - by dispatch
            return await self.replies.send(
                m, wire, ResponseCode.PROTOCOL_ERROR, ErrorResponse(""), door, t0
            )
        who = Identity(body.handle, body.index)
        credentials = self.reg.registry.credentials
        try:
            credentials.guard.admit(client, who)
        except Throttled as exc:
            return await self._throttled(m, wire, door, t0, exc)
        try:
            secret = await self.reg.registry.key_for(who, "HS_SECKEY")
            await check_secret_key(
                secret, body.signed_response, signed_data(body.nonce, body.digest.digest)
            )
            valid = True
            credentials.guard.passed(client, who)
        except AuthBusy as exc:
            credentials.guard.passed(client, who)  # not checked: no failure
            return await self.replies.send(
                m, wire, ResponseCode.SERVER_TOO_BUSY, ErrorResponse(str(exc)), door, t0
            )
        except AuthError as exc:
            valid = False
            await credentials.failed_login(
                who, body.handle, f"VERIFY_RESPONSE: {exc}", client=client, door=door
            )
        return await self.replies.send(
            m, wire, ResponseCode.SUCCESS, VerifyAuthResponse(valid), door, t0
        )

    async def _throttled(
        self, m: Message, wire: bytes, door: str, t0: float, exc: Throttled
    ) -> bytes | None:
        """Too many failed authentications: the IDIS rate code, as --rate-limit answers
        (the reference clients show the message with the code)."""
        return await self.replies.send(
            m, wire, ResponseCode.REQUEST_LIMIT_DAILY, ErrorResponse(str(exc)), door, t0
        )

    async def _execute(self, m: Message, who: Identity) -> tuple[int, Any]:
        if m.op_code == OpCode.LOGIN_ID_SYSTEM:
            return ResponseCode.SUCCESS, Empty()
        try:
            return await perform(self.reg.registry, m, who)
        except Exception as exc:  # the store failed: say so; never leave the client hanging
            if outcome_unknown(exc):  # it may have committed: never say it failed
                log.warning("registry operation: %s", exc)
                return ResponseCode.ERROR, ErrorResponse(OUTCOME_UNKNOWN)
            log.exception("registry operation failed")
            return ResponseCode.ERROR, ErrorResponse("the registry could not complete the write")
