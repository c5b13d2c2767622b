"""The Handle.Net-compatible REST API on the HTTP port (handle-protocol.md §7).

``/api/handles/{handle}`` (GET, PUT, DELETE), ``/api/handles?prefix=``, ``/api/prefixes``
and ``/api/sessions``, in the reference server's JSON and with its response-code → HTTP
status mapping, so clients such as pyhandle work unmodified. It only translates:
reads go through the resolver core, writes through the registry service.

Authentication: ``Authorization: Basic base64("{index}%3A{handle}:{secret}")`` for an
HS_SECKEY admin, ``Bearer`` with an API key or IDIS token, or ``Handle sessionId="..."``
for a REST session whose holder proved a key (HS_SECKEY or HS_PUBKEY) by signing the
session's nonce, as the reference server's SessionsServlet does. Bad input gets a 4xx
with a JSON body, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from aiohttp import web
from aiohttp.typedefs import Handler

from idnode.registry.auth import Identity
from idnode.registry.login_guard import Throttled
from idnode.registry.names import InvalidName, check_handle, prefix_of
from idnode.registry.service import OUTCOME_UNKNOWN, UNAVAILABLE, outcome_unknown
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.sessions import SessionLimit
from idnode.registry.statistics import USAGE
from idnode.registry.writes import mint_handle

from . import metrics
from .codec import ProtocolError, ResponseCode, decode_values
from .codec.jsonform import INT32_MAX, loads, parse_int, value_to_json, values_from_json
from .core import Resolution, answer
from .logs import Repeats
from .rest_sessions_door import (
    BAD_HEADER,
    HEADER_FIELDS,
    NOT_VERIFIED,
    RestSessions,
    SessionView,
    is_answer,
    parse_handle_authorization,
)
from .settings import Settings

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from .core import Resolver

RC = ResponseCode
MAX_BODY = 1024 * 1024
# A checked credential is trusted this long on a worker: with the registry's own proof of
# it (registry/proven_secrets.py, up to 2 s old), a revoked key or changed secret stops
# working everywhere within 10 s.
AUTH_CACHE_SECONDS = 8.0
# A PUT body is a value list, or an object holding one; the GET answer's other fields
# are accepted so that what a client read can be written back. Anything else is refused.
PUT_FIELDS = frozenset({"values", "handle", "responseCode"})
API = "/api/handles"
SESSIONS = "/api/sessions"
# The node's session_ttl: a REST session lives this long idle.
REST_SESSION_TTL: float = Settings.session_ttl


def http_status(rc: int, *, resolution: bool = False, created: bool = False) -> int:
    """The reference server's mapping from Handle response codes to HTTP statuses."""
    if rc == RC.SUCCESS:
        return 201 if created else 200
    table: dict[int, int] = {
        RC.ERROR: 500,
        RC.HANDLE_NOT_FOUND: 404,
        RC.HANDLE_ALREADY_EXISTS: 409,
        RC.INVALID_HANDLE: 400,
        RC.VALUE_ALREADY_EXISTS: 409,
        RC.INVALID_VALUE: 400,
        RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE: 400,
        RC.AUTHENTICATION_NEEDED: 401,
        RC.REQUEST_LIMIT_DAILY: 429,
    }
    if rc == RC.VALUES_NOT_FOUND:
        return 200 if resolution else 400
    if rc in table:
        return table[rc]
    if 400 <= rc < 500 or rc >= 600:
        return 403
    return 500


def reply(
    rc: int,
    handle: str | None = None,
    *,
    status: int | None = None,
    message: str = "",
    **extra: Any,
) -> web.Response:
    body: dict[str, Any] = {"responseCode": rc}
    if handle is not None:
        body["handle"] = handle
    if message:
        body["message"] = message
    body.update(extra)
    return web.Response(
        status=status or http_status(rc),
        text=json.dumps(body, ensure_ascii=False),
        content_type="application/json",
    )


async def json_body(request: web.Request, empty: bytes) -> Any:
    """The request's JSON body (``empty`` stands for none), or the answer refusing it:
    413 over MAX_BODY, 400 with the parser's reason. A JSON document is never a
    web.Response, so the caller tells them apart by type."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        return reply(RC.INVALID_VALUE, status=413, message="body over 1 MiB")
    try:
        return loads(await request.read() or empty)
    except ProtocolError as exc:
        return reply(RC.INVALID_VALUE, status=400, message=exc.reason)


_down = Repeats(logging.getLogger("idnode.rest"))


@web.middleware
async def _registry_down(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A registry that cannot be reached is a 503 with a JSON body at once (the client
    may retry), never aiohttp's plain-text 500; reads the caches answer are unaffected."""
    try:
        return await handler(request)
    except Exception as exc:
        if not (request.path.startswith("/api/") and registry_unavailable(exc)):
            raise
        if outcome_unknown(exc):  # 504: the registry did not confirm; not a failure
            _down.warning("%s %s: outcome unknown (%s)", request.method, request.path, exc)
            return reply(RC.ERROR, status=504, message=OUTCOME_UNKNOWN)
        _down.warning("%s %s: registry unavailable (%s)", request.method, request.path, exc)
        return reply(RC.ERROR, status=503, message=UNAVAILABLE)


class RestPart:
    """A part of the REST API that its own module adds (API keys, batches, templates):
    the node's RestApi for credentials, and its registry, or 404 on a node without one."""

    def __init__(self, rest: RestApi) -> None:
        self.rest = rest

    @property
    def registry(self) -> RegistryService:
        if self.rest.registry is None:
            raise web.HTTPNotFound()
        return self.rest.registry


class RestApi:
    def __init__(
        self,
        core: Resolver,
        registry: RegistryService | None,
        session_ttl: float = REST_SESSION_TTL,
        *,
        anonymous_ttl: float = Settings.challenge_ttl,
        sessions_max: int = Settings.sessions_max,
    ) -> None:
        self.core = core
        self.registry = registry
        self.sessions = (
            RestSessions(registry, session_ttl, anonymous_ttl, sessions_max)
            if registry is not None
            else None
        )
        # (credentials, client) -> (trusted until, who): per client, so a client the login
        # guard throttles never learns a guess is right from another client's success.
        self._auth_cache: dict[tuple[str, str], tuple[float, Identity]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.middlewares.append(_registry_down)
        app.router.add_get(API, self.list_handles)
        app.router.add_get("/api/prefixes", self.prefixes)
        # [\s\S], not ".": a path with an encoded newline (%0A) is still a handle path, to
        # be refused as JSON by _handle, not left to aiohttp's plain-text 404.
        app.router.add_route("GET", API + r"/{tail:[\s\S]+}", self.get)
        app.router.add_route("PUT", API + r"/{tail:[\s\S]+}", self.put)
        app.router.add_route("DELETE", API + r"/{tail:[\s\S]+}", self.delete)
        app.router.add_route("*", SESSIONS, self.session_route)
        app.router.add_route("*", SESSIONS + r"/{tail:[\s\S]*}", self.session_route)
        app.router.add_get("/openapi.json", self.openapi)
        from .rest_prefixes_door import PrefixApi  # it builds on this module

        PrefixApi(self).add_routes(app)  # the prefix lifecycle
        from .rest_statistics_door import StatisticsApi

        StatisticsApi(self).add_routes(app)  # statistics reported upward and received

    # --- request parsing -------------------------------------------------------------

    @staticmethod
    def _handle(request: web.Request, *, stem: bool = False) -> str:
        """The handle from the raw path; path tricks are refused, not normalised.

        ``stem``: the path is what a minted handle starts with ("88.166/" or
        "88.166/DOC-"), so an empty suffix is allowed.
        """
        raw = request.raw_path.split("?", 1)[0][len(API) + 1 :]
        if "%2f" in raw.lower():
            raise InvalidName("an encoded '/' (%2F) is not allowed in a handle path")
        try:
            # Strict: %FF or an encoded surrogate is refused, not turned into U+FFFD (a
            # different handle from the one the client named); raw bytes that are not
            # UTF-8 reach here as surrogate escapes, which encode() refuses.
            handle = unquote(raw, errors="strict")
            handle.encode("utf-8")
        except UnicodeError:
            raise InvalidName("the handle in the path is not UTF-8") from None
        if any(part in (".", "..") for part in handle.split("/")):
            raise InvalidName("'.' and '..' are not handle parts")
        check_handle(mint_handle(handle) if stem else handle)
        return handle

    @staticmethod
    def _query(request: web.Request) -> dict[str, list[str]]:
        return parse_qs(request.query_string, keep_blank_values=True)

    @staticmethod
    def _ints(q: dict[str, list[str]], name: str, low: int = 0, high: int = INT32_MAX) -> list[int]:
        """Every ``name`` parameter as a plain ASCII decimal in ``low..high`` (int() would
        also take "²"'s neighbours such as "٣", "1_0" and " 1"). ProtocolError (a 400)
        otherwise."""
        return [parse_int(v, name, low, high) for v in q.get(name, [])]

    @staticmethod
    def _flag(q: dict[str, list[str]], name: str) -> bool:
        return q.get(name, ["false"])[-1].lower() in ("true", "1", "yes", "")

    @staticmethod
    def _java_flag(q: dict[str, list[str]], name: str, default: bool) -> bool:
        """A flag read as the reference reads overwrite and mintNewSuffix (Java's
        Boolean.parseBoolean of the first value): only "true", in any case, is true."""
        if name not in q:
            return default
        return q[name][0].lower() == "true"

    async def _identity(self, request: web.Request) -> Identity | None:
        """The admin the credentials name; None when there are none.

        Raises web.HTTPException (as JSON) when credentials are given but wrong.
        """
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        if not header.isascii():  # every scheme's credentials are ASCII (base64, tokens)
            raise _JsonError(401, RC.INVALID_CREDENTIAL, "the Authorization header is not ASCII")
        scheme, _, token = header.strip().partition(" ")
        try:
            return await self._credentials(request, header, scheme, token)
        except Throttled as exc:  # too many failed authentications: not even checked
            raise _JsonError(
                429, RC.REQUEST_LIMIT_DAILY, str(exc), retry_after=exc.retry_after
            ) from None

    async def _credentials(
        self, request: web.Request, header: str, scheme: str, token: str
    ) -> Identity | None:
        client = request.remote or ""
        if self.sessions is not None and scheme.lower() == "handle":
            return await self._session_identity(header, self.sessions, client)
        registry = self.registry
        if registry is None or scheme.lower() not in ("basic", "bearer"):
            raise _JsonError(
                401,
                RC.INVALID_CREDENTIAL,
                "use Basic index%3Ahandle:secret, Bearer <API key or token>,"
                ' or Handle sessionId="..." (POST /api/sessions)',
            )
        cached = self._auth_cache.get((token, client))
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if scheme.lower() == "bearer":
            return await self._bearer(token.strip(), registry, client)
        return await self._basic(token, registry, client)

    async def _basic(self, token: str, registry: RegistryService, client: str) -> Identity:
        """The admin whose HS_SECKEY secret Basic credentials give; 401 unless it is right."""
        try:
            user, _, secret = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
            admin = unquote(user, errors="strict")
            if not admin.partition(":")[0].isascii():  # int() would read "٣" as 3
                raise ValueError("the admin index is not ASCII digits")
            who = Identity.parse(admin)
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _JsonError(
                401,
                RC.INVALID_CREDENTIAL,
                "Basic credentials must be index%3Ahandle:secret",
            ) from None
        if not await registry.check_password(
            who, secret.encode(), client=client, door="REST Basic"
        ):
            raise _JsonError(401, RC.AUTHENTICATION_FAILED, f"authentication of {who} failed")
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[(token, client)] = (time.monotonic() + AUTH_CACHE_SECONDS, who)
        return who

    async def _session_identity(
        self, header: str, sessions: RestSessions, client: str
    ) -> Identity | None:
        """Who a ``Handle`` authorization names: the identity its session proved, after
        checking the answer it may carry. Like the reference's authentication filter, an
        unknown or expired session, or a wrong answer, is a 401."""
        fields = parse_handle_authorization(header)
        if fields is None:
            raise _JsonError(401, RC.INVALID_CREDENTIAL, BAD_HEADER)
        session_id = fields.get("sessionid")
        if session_id is None:
            if is_answer(fields):
                raise _JsonError(
                    401,
                    RC.AUTHENTICATION_FAILED,
                    "an answer needs the sessionId whose nonce it signs (POST /api/sessions)",
                )
            return None
        session = await sessions.find(session_id)
        if session is not None and is_answer(fields):
            session = await sessions.answer(session, fields, client)
        if session is None:
            raise _JsonError(401, RC.AUTHENTICATION_NEEDED, "unknown or expired session")
        if session.error:
            raise _JsonError(
                401, RC.AUTHENTICATION_FAILED, session.error, challenge=session.challenge()
            )
        return session.identity

    async def _bearer(self, token: str, registry: RegistryService, client: str) -> Identity:
        """An API key (idnode apikey create) or an IDIS login token (POST /identity/token)."""
        credentials = registry.credentials
        # A sealed token first: it cannot be guessed, so only an API key miss is a failure.
        who = credentials.token_identity(token) or await credentials.api_key_identity(
            token, client=client, door="REST bearer"
        )
        if who is None:
            raise _JsonError(
                401,
                RC.AUTHENTICATION_FAILED,
                "unknown API key, or an expired token",
            )
        self._auth_cache[(token, client)] = (time.monotonic() + AUTH_CACHE_SECONDS, who)
        return who

    def forget_credential(self, revoked: Callable[[str], bool]) -> None:
        """Drop the checked credentials ``revoked`` names (an API key just revoked), so
        this worker stops accepting them at once rather than after the cache's time."""
        for key in [k for k in self._auth_cache if revoked(k[0])]:
            self._auth_cache.pop(key, None)

    async def identity(self, request: web.Request) -> Identity | None:
        """The administrator a request's credentials name (None without credentials), for
        the other REST modules; raises the JSON 401/429 when they are wrong."""
        return await self._identity(request)

    async def need_identity(self, request: web.Request) -> Identity:
        """As :meth:`identity`, and a JSON 401 without credentials."""
        return await self._need_identity(request)

    async def _need_identity(self, request: web.Request) -> Identity:
        who = await self._identity(request)
        if who is None:
            raise _JsonError(
                401,
                RC.AUTHENTICATION_NEEDED,
                "this needs an administrator: Basic index%3Ahandle:secret",
            )
        return who

    # --- handlers --------------------------------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        try:
            handle = self._handle(request)
        except InvalidName as exc:
            return reply(RC.INVALID_HANDLE, message=str(exc))
        q = self._query(request)
        try:
            indexes = tuple(self._ints(q, "index"))
        except ProtocolError as exc:
            return reply(RC.INVALID_VALUE, handle, status=400, message=exc.reason)
        types = tuple(q.get("type", []))
        who = await self._identity(request)
        e = await self.core.entry(handle)
        if isinstance(e, Resolution):
            res = e
        else:
            authorized = (
                who is not None
                and not self._flag(q, "publicOnly")
                and e.values_wire is not None
                and self.registry is not None
                and await self.registry.may_read_restricted(handle, e.values_wire, who)
            )
            res = answer(e, indexes, types, authorized=authorized)
        metrics.TALLY.request("rest", 1, res.response_code)
        USAGE.resolved(handle, res.response_code)  # per-prefix statistics, reported upward
        if res.response_code == RC.SUCCESS:
            values = [value_to_json(v) for v in decode_values(res.values_wire)]
            return reply(RC.SUCCESS, handle, values=values)
        if res.response_code == RC.VALUES_NOT_FOUND:
            return reply(RC.VALUES_NOT_FOUND, handle, status=200, values=[])
        if res.referral:  # served by another node: where to ask, as the reference's JSON
            return reply(
                res.response_code,
                handle,
                status=300,  # the reference proxy's status for 302 and 303
                message=res.message,
                referralHandle=res.referral,
                values=[value_to_json(v) for v in decode_values(res.values_wire)],
            )
        return reply(res.response_code, handle, message=res.message)

    async def put(self, request: web.Request) -> web.Response:
        q = self._query(request)
        mint = self._java_flag(q, "mintNewSuffix", False)
        try:
            handle = self._handle(request, stem=mint)
        except InvalidName as exc:
            return reply(RC.INVALID_HANDLE, message=str(exc))
        registry = self.registry
        if registry is None:
            return reply(RC.OPERATION_NOT_SUPPORTED, handle, status=403)
        who = await self._need_identity(request)  # credentials first: reveal nothing else
        if request.content_type not in ("application/json", ""):
            return reply(
                RC.INVALID_VALUE,
                handle,
                status=415,
                message="PUT takes Content-Type: application/json",
            )
        if request.content_length is not None and request.content_length > MAX_BODY:
            return reply(RC.INVALID_VALUE, handle, status=413, message="body over 1 MiB")
        try:
            wanted = set(self._ints(q, "index"))
            body = loads(await request.read() or b"[]")
            if isinstance(body, dict) and (unknown := sorted(set(body) - PUT_FIELDS)):
                return reply(
                    RC.INVALID_VALUE,
                    handle,
                    status=400,
                    message=f"unknown field(s) in the body: {', '.join(unknown)}"
                    ' (a PUT takes [values] or {"values": [...]})',
                )
            values = values_from_json(body)
        except ProtocolError as exc:
            return reply(RC.INVALID_VALUE, handle, status=400, message=exc.reason)
        if wanted:
            chosen = tuple(v for v in values if v.index in wanted) or values
            r = await registry.put_values(handle, chosen, who)
            return reply(r.code, handle, message=r.message)
        # As HandleJsonRestApiServlet: a PUT replaces an existing handle unless
        # ?overwrite=false; 201 when it created one, 200 when it replaced one.
        overwrite = self._java_flag(q, "overwrite", True)
        c = await registry.create(handle, values, who, overwrite=overwrite, mint=mint)
        if c.ok:
            return reply(RC.SUCCESS, c.handle, status=200 if c.replaced else 201)
        return reply(c.code, handle, message=c.message)

    async def delete(self, request: web.Request) -> web.Response:
        try:
            handle = self._handle(request)
        except InvalidName as exc:
            return reply(RC.INVALID_HANDLE, message=str(exc))
        if self.registry is None:
            return reply(RC.OPERATION_NOT_SUPPORTED, handle, status=403)
        who = await self._need_identity(request)
        q = self._query(request)
        if q.get("index"):
            try:
                indexes = tuple(self._ints(q, "index"))
            except ProtocolError as exc:
                return reply(RC.INVALID_VALUE, handle, status=400, message=exc.reason)
            r = await self.registry.remove_values(handle, indexes, who)
        else:
            r = await self.registry.delete(handle, who)
        return reply(r.code, handle, message=r.message)

    # --- /api/sessions (the reference's SessionsServlet) -------------------------------

    async def session_route(self, request: web.Request) -> web.StreamResponse:
        """POST /api/sessions opens a session; GET, PUT or POST /api/sessions/this shows it
        and checks an answer; DELETE /api/sessions/this ends it. Other paths: 403."""
        sessions = self.sessions
        if sessions is None:
            return _session_error(403, "this node has no registry, so no sessions")
        path = request.match_info.get("tail", "")
        path = path[:-1] if path.endswith("/") else path
        if not path:
            allow = "POST, TRACE, OPTIONS"
            if request.method == "OPTIONS":
                return web.Response(headers={"Allow": allow})
            if request.method != "POST":
                return _session_error(405, "POST /api/sessions opens a session", allow=allow)
        elif request.method == "OPTIONS":
            return web.Response(headers={"Allow": "GET, HEAD, POST, PUT, DELETE, TRACE, OPTIONS"})
        elif path != "this":
            return _session_error(403, "the only session you can name is /api/sessions/this")
        try:
            fields = await self._session_fields(request)
        except ValueError as exc:
            return _session_error(400, str(exc))
        try:
            if not path:
                return await self._session_open(request, fields, sessions)
            if request.method == "DELETE":
                return await self._session_end(fields, sessions)
            if request.method in ("GET", "HEAD", "PUT", "POST"):
                return await self._session_this(request, fields, sessions)
        except Throttled as exc:  # too many failed authentications: not even checked
            refused = _session_error(429, str(exc))
            refused.headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
            return refused
        return _session_error(405, f"{request.method} is not a session operation")

    async def _session_fields(self, request: web.Request) -> dict[str, str]:
        """The answer's fields: from the Authorization header, else the query, else a JSON
        object body, as the reference's HandleAuthorizationHeader.fromHeaderAndParameters.
        Raises ValueError (a 400) on a malformed header or body."""
        header = request.headers.get("Authorization", "")
        fields: dict[str, str] = {}
        if header.strip().lower().startswith("handle"):
            parsed = parse_handle_authorization(header)
            if parsed is None:
                raise ValueError(BAD_HEADER)
            fields = parsed
        for name, values in self._query(request).items():
            if name.lower() in HEADER_FIELDS:
                fields.setdefault(name.lower(), values[0])
        for name, value in (await _json_object(request)).items():
            if name.lower() in HEADER_FIELDS:
                fields.setdefault(name.lower(), value)
        return fields

    async def _session_open(
        self, request: web.Request, fields: dict[str, str], sessions: RestSessions
    ) -> web.Response:
        if "sessionid" in fields:
            return _session_error(400, "POST /api/sessions opens a new session: no sessionId")
        try:
            session = await sessions.open()
        except SessionLimit as exc:
            return _session_error(503, str(exc))
        checked = await self._check_session_answer(request, session, fields, sessions)
        return _session_reply(201, checked or session, Location=SESSIONS + "/this")

    async def _session_this(
        self, request: web.Request, fields: dict[str, str], sessions: RestSessions
    ) -> web.Response:
        session_id = fields.get("sessionid")
        if session_id is None:
            if is_answer(fields) or "cnonce" in fields:
                return _session_error(403, "an answer needs a sessionId (POST /api/sessions)")
            return await self._sessionless(request, sessions.registry)
        session = await sessions.find(session_id)
        if session is not None:
            session = await self._check_session_answer(request, session, fields, sessions)
        if session is None:
            return _session_error(403, "unknown or expired session")
        return _session_reply(401 if session.error else 200, session)

    async def _sessionless(self, request: web.Request, registry: RegistryService) -> web.Response:
        """GET /api/sessions/this without a session: who Basic credentials name, if any."""
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic":
            return web.json_response({"authenticated": False})
        try:
            who = await self._basic(token, registry, request.remote or "")
        except _JsonError:
            return web.json_response({"error": NOT_VERIFIED}, status=401)
        return web.json_response({"authenticated": True, "id": str(who)})

    async def _check_session_answer(
        self,
        request: web.Request,
        session: SessionView,
        fields: dict[str, str],
        sessions: RestSessions,
    ) -> SessionView | None:
        """The session after the answer or Basic credentials the request carries (the
        reference accepts both); None when the session vanished meanwhile."""
        if is_answer(fields):
            return await sessions.answer(session, fields, request.remote or "")
        scheme, _, token = request.headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() != "basic":
            return session
        try:
            who = await self._basic(token, sessions.registry, request.remote or "")
        except _JsonError:
            return replace(session, error=NOT_VERIFIED)
        return await sessions.prove(session, who)

    async def _session_end(self, fields: dict[str, str], sessions: RestSessions) -> web.Response:
        session_id = fields.get("sessionid")
        if session_id is None or not await sessions.end(session_id):
            return _session_error(403, "unknown or expired session")
        return web.Response(status=204)

    async def list_handles(self, request: web.Request) -> web.Response:
        q = self._query(request)
        prefix = q.get("prefix", [""])[-1]
        if not prefix or self.registry is None:
            return reply(RC.INVALID_HANDLE, status=400, message="give ?prefix=")
        try:
            page = parse_int(q.get("page", ["0"])[-1], "page", 0, INT32_MAX)
            size = parse_int(q.get("pageSize", ["1000"])[-1], "pageSize", 1, 10_000)
        except ProtocolError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=exc.reason)
        if page < 0 or not 0 < size <= 10_000:
            return reply(RC.INVALID_VALUE, status=400, message="pageSize must be 1..10000")
        who = await self._need_identity(request)
        listing = await self.registry.list_handles("0.NA/" + prefix_of(prefix + "/"), who)
        if not listing.ok:
            return reply(listing.code, message=listing.message)
        handles = list(listing.handles)
        return reply(
            RC.SUCCESS,
            prefix=prefix,
            totalCount=str(len(handles)),
            page=page,
            pageSize=size,
            handles=handles[page * size : (page + 1) * size],
        )

    async def prefixes(self, request: web.Request) -> web.Response:
        # The registry and the core's authority stage share one PrefixAuthority (node.py).
        homed = self.registry.authority.homed if self.registry is not None else frozenset()
        return reply(RC.SUCCESS, prefixes=sorted(homed))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)


def _session_error(status: int, message: str, *, allow: str = "") -> web.Response:
    """A refusal of the sessions API: the reference's status, with a JSON reason."""
    headers = {"Allow": allow} if allow else None
    return web.json_response({"error": message}, status=status, headers=headers)


def _session_reply(status: int, session: SessionView, **headers: str) -> web.Response:
    if status == 401:
        headers["WWW-Authenticate"] = session.challenge()
    return web.json_response(session.to_json(), status=status, headers=headers)


async def _json_object(request: web.Request) -> dict[str, str]:
    """The string fields of a JSON object body (application/json), as the reference's
    JsonParameterServletReq reads them: an array gives its first element."""
    if request.content_type != "application/json":
        return {}
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ValueError("body over 1 MiB")
    raw = await request.read()
    if not raw.strip():
        return {}
    doc = loads(raw)  # ProtocolError is a ValueError: a 400 with its reason
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    out: dict[str, str] = {}
    for name, value in doc.items():
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            out[name] = str(value)
    return out


class _JsonError(web.HTTPException):
    def __init__(
        self, status: int, rc: int, message: str, *, challenge: str = "", retry_after: float = 0
    ) -> None:
        self.status_code = status
        headers = None
        if status == 401:
            headers = {"WWW-Authenticate": challenge or 'Basic realm="idnode"'}
        elif retry_after > 0:
            headers = {"Retry-After": str(max(1, math.ceil(retry_after)))}
        super().__init__(
            text=json.dumps({"responseCode": rc, "message": message}),
            content_type="application/json",
            headers=headers,
        )


_HANDLE_PARAM = {
    "name": "handle",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "prefix/suffix",
}


# What a write or a refusal answers: the Handle response code, the handle, and why.
_OUTCOME = {
    "type": "object",
    "required": ["responseCode"],
    "properties": {
        "responseCode": {"type": "integer"},
        "handle": {"type": "string"},
        "message": {"type": "string"},
    },
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _query(name: str, schema: dict[str, Any], *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "schema": schema}


_INDEX = _query(
    "index", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}, required=False
) | {"description": "a value index (repeatable); a plain ASCII decimal"}
_BOOL = {"type": "boolean"}
# Every refusal of the handle API: a Handle response code and why (4XX covers 400, 401,
# 403, 404, 409, 413, 415 and 429, as the reference maps response codes); 503 when the
# registry cannot be reached.
_REFUSED = {
    "4XX": _json(_ref("Refusal"), "refused: the Handle response code and why"),
    "503": _json(_ref("Refusal"), "the registry cannot be reached: try again"),
    "504": _json(
        _ref("Refusal"),
        "the registry went away during the write's COMMIT: it may have taken effect",
    ),
}
_SESSION_REFUSED = {
    "4XX": _json(_ref("SessionError"), "refused, with why"),
    "503": _json(_ref("SessionError"), "too many sessions, or the registry is unreachable"),
}
# The IDIS facade answers 200 with an SNMS status whatever happens (1 ok, -1 not logged
# in, -2 business error, -3 no permission, -4 internal error); 429 when logins from a
# client are throttled.
_IDIS_ANSWER = {
    "200": _json(_ref("IdisAnswer"), "an SNMS answer: status, message, data"),
    "429": _json(_ref("IdisAnswer"), "too many failed logins: wait Retry-After seconds"),
}
_IDIS_JSON_BODY = {"required": True, "content": {"application/json": {"schema": {}}}}


def _idis_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "idnode Handle REST API",
        "version": "1",
        "description": "The reference Handle server's /api/handles contract, /api/sessions,"
        " and the IDIS management facade (SNMS): /identity/token, /identityv2/data and"
        " /snms/api/v5/template.",
    },
    "components": {
        "securitySchemes": {
            "basic": {"type": "http", "scheme": "basic"},
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "description": "an API key (idnode apikey create) or an IDIS login token",
            },
        },
        "schemas": {
            "Refusal": _OUTCOME,
            "Value": {
                "type": "object",
                "required": ["index", "type", "data", "ttl", "timestamp"],
                "properties": {
                    "index": {"type": "integer"},
                    "type": {"type": "string"},
                    "data": {
                        "type": "object",
                        "required": ["format", "value"],
                        "properties": {
                            "format": {
                                "type": "string",
                                "enum": ["string", "base64", "admin", "vlist", "site", "key"],
                            },
                            "value": {},
                        },
                    },
                    "ttl": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
                    "timestamp": {"type": "string"},
                    "permissions": {"type": "string", "pattern": "^[01]{4}$"},
                    "references": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "handle": {"type": "string"},
                                "index": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "ValueInput": {
                "type": "object",
                "required": ["index", "type"],
                "properties": {
                    "index": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                    "type": {"type": "string"},
                    "data": {
                        "oneOf": [
                            {"type": "string"},
                            {
                                "type": "object",
                                "required": ["value"],
                                "properties": {
                                    "format": {
                                        "type": "string",
                                        "enum": [
                                            "string",
                                            "base64",
                                            "hex",
                                            "admin",
                                            "vlist",
                                            "site",
                                            "key",
                                        ],
                                    },
                                    "value": {},
                                },
                            },
                        ]
                    },
                    "ttl": {
                        "oneOf": [
                            {"type": "integer", "minimum": 0, "maximum": 2**31 - 1},
                            {"type": "string", "description": "an ISO 8601 time (absolute)"},
                        ]
                    },
                    "timestamp": {"type": "string"},
                    "permissions": {"type": "string", "pattern": "^[01]{4}$"},
                    "references": {"type": "array", "items": {"type": "object"}},
                },
                "additionalProperties": False,
            },
            "HandleRecord": {
                "type": "object",
                "required": ["responseCode", "handle", "values"],
                "properties": {
                    "responseCode": {"type": "integer"},
                    "handle": {"type": "string"},
                    "values": {"type": "array", "items": _ref("Value")},
                },
            },
            "Written": _OUTCOME,
            "Session": {
                "type": "object",
                "required": ["sessionId", "nonce"],
                "properties": {
                    "sessionId": {"type": "string"},
                    "nonce": {"type": "string", "format": "byte"},
                    "authenticated": {"type": "boolean"},
                    "id": {"type": "string"},
                    "error": {"type": "string"},
                },
            },
            "SessionError": {
                "type": "object",
                "required": ["error"],
                "properties": {"error": {"type": "string"}},
            },
            "IdisAnswer": {
                "type": "object",
                "required": ["status", "message", "data"],
                "properties": {
                    "status": {"type": "integer", "enum": [1, -1, -2, -3, -4]},
                    "message": {"type": "string"},
                    "data": {"nullable": True},
                },
            },
            "IdisValue": {
                "type": "object",
                "required": ["index", "type"],
                "properties": {
                    "index": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1},
                    "type": {"type": "string"},
                    "data": {},
                    "ttl": {},
                    "auth": {"description": "present and true: not public"},
                },
            },
            "IdisRecord": {
                "type": "object",
                "required": ["handle"],
                "properties": {
                    "handle": {"type": "string"},
                    "templateVersion": {"type": "string"},
                    "value": {"type": "array", "items": _ref("IdisValue")},
                },
            },
        },
    },
    "paths": {
        "/api/handles/{handle}": {
            "get": {
                "summary": "Resolve a handle",
                "parameters": [
                    _HANDLE_PARAM,
                    _INDEX,
                    _query("type", {"type": "string"}),
                    _query("publicOnly", _BOOL),
                ],
                "responses": {
                    "200": _json(_ref("HandleRecord"), "values (none may match: 200 too)"),
                    **_REFUSED,
                },
            },
            "put": {
                "summary": "Create a handle, or add/replace values with ?index=",
                "security": [{"basic": []}, {"bearer": []}],
                "parameters": [
                    _HANDLE_PARAM,
                    _INDEX,
                    _query("overwrite", _BOOL),
                    _query("mintNewSuffix", _BOOL),
                ],
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "oneOf": [
                                    {"type": "array", "items": _ref("ValueInput")},
                                    {
                                        "type": "object",
                                        "required": ["values"],
                                        "properties": {
                                            "values": {
                                                "type": "array",
                                                "items": _ref("ValueInput"),
                                            },
                                            "handle": {"type": "string"},
                                            "responseCode": {"type": "integer"},
                                        },
                                        "additionalProperties": False,
                                    },
                                ]
                            }
                        }
                    }
                },
                "responses": {
                    "201": _json(_ref("Written"), "created"),
                    "200": _json(_ref("Written"), "replaced, or values written"),
                    **_REFUSED,
                },
            },
            "delete": {
                "summary": "Delete a handle, or values with ?index=",
                "security": [{"basic": []}, {"bearer": []}],
                "parameters": [_HANDLE_PARAM, _INDEX],
                "responses": {"200": _json(_ref("Written"), "deleted"), **_REFUSED},
            },
        },
        "/api/handles": {
            "get": {
                "summary": "List the handles under a prefix",
                "security": [{"basic": []}, {"bearer": []}],
                "parameters": [
                    _query("prefix", {"type": "string"}, required=True),
                    _query("page", {"type": "integer", "minimum": 0, "maximum": 2**31 - 1}),
                    _query("pageSize", {"type": "integer", "minimum": 1, "maximum": 10_000}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["responseCode", "handles"],
                            "properties": {
                                "responseCode": {"type": "integer"},
                                "prefix": {"type": "string"},
                                "totalCount": {"type": "string"},
                                "page": {"type": "integer"},
                                "pageSize": {"type": "integer"},
                                "handles": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "handles",
                    ),
                    **_REFUSED,
                },
            },
        },
        "/api/prefixes": {
            "get": {
                "summary": "Prefixes homed here",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "required": ["responseCode", "prefixes"],
                            "properties": {
                                "responseCode": {"type": "integer"},
                                "prefixes": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "prefixes",
                    )
                },
            }
        },
        "/api/sessions": {
            "post": {
                "summary": "Open a session: its sessionId and the nonce to sign",
                "responses": {
                    "201": _json(_ref("Session"), "sessionId, nonce"),
                    **_SESSION_REFUSED,
                },
            }
        },
        "/api/sessions/this": {
            "description": 'Name the session with Authorization: Handle sessionId="..."; '
            "prove a key by adding id, type (HS_SECKEY or HS_PUBKEY), cnonce, alg and "
            "signature (over nonce + cnonce, base64).",
            "get": {
                "summary": "The session; checks an answer it carries",
                "responses": {
                    "200": _json(
                        {"oneOf": [_ref("Session"), {"type": "object"}]},
                        "the session (without one: whether Basic credentials authenticate)",
                    ),
                    **_SESSION_REFUSED,
                },
            },
            "put": {
                "summary": "Answer the session's nonce",
                "responses": {
                    "200": _json({"oneOf": [_ref("Session"), {"type": "object"}]}, "authenticated"),
                    **_SESSION_REFUSED,
                },
            },
            "delete": {
                "summary": "End the session",
                "responses": {"204": {"description": "ended"}, **_SESSION_REFUSED},
            },
        },
        "/identity/token": {
            "post": {
                "summary": "IDIS login: a token (24 h) for an admin key and its secret",
                "requestBody": _idis_body(
                    {
                        "type": "object",
                        "required": ["username", "password"],
                        "properties": {
                            "username": {"type": "string", "example": "300:0.NA/88.166"},
                            "password": {"type": "string"},
                        },
                    }
                ),
                "responses": _IDIS_ANSWER,
            }
        },
        "/identityv2/data/detail": {
            "get": {
                "summary": "An identifier's public values and template version",
                "parameters": [_query("handle", {"type": "string"}, required=True)],
                "responses": _IDIS_ANSWER,
            }
        },
        "/identityv2/data": {
            method: {
                "summary": summary,
                "security": [{"bearer": []}],
                "requestBody": _idis_body(schema),
                "responses": _IDIS_ANSWER,
            }
            for method, summary, schema in (
                ("post", "Register an identifier", _ref("IdisRecord")),
                ("put", "Add or replace values of an identifier", _ref("IdisRecord")),
                (
                    "delete",
                    "Delete an identifier",
                    {
                        "type": "object",
                        "required": ["handle"],
                        "properties": {"handle": {"type": "string"}},
                    },
                ),
            )
        },
        **{
            f"/identityv2/data/{name}": {
                method: {
                    "summary": f"{name}: at most 2000 records, a result for each",
                    "security": [{"bearer": []}],
                    "requestBody": _idis_body(
                        {
                            "oneOf": [
                                {"type": "array", "items": item, "maxItems": 2000},
                                {
                                    "type": "object",
                                    "required": ["data"],
                                    "properties": {
                                        "data": {"type": "array", "items": item, "maxItems": 2000}
                                    },
                                },
                            ]
                        }
                    ),
                    "responses": _IDIS_ANSWER,
                }
            }
            for name, method, item in (
                ("batchCreate", "post", _ref("IdisRecord")),
                ("batchUpdate", "put", _ref("IdisRecord")),
                (
                    "batchDelete",
                    "delete",
                    {"oneOf": [{"type": "string"}, _ref("IdisRecord")]},
                ),
            )
        },
        "/snms/api/v5/template": {
            "get": {
                "summary": "A prefix's templates, or one version",
                "parameters": [
                    _query("prefix", {"type": "string"}, required=True),
                    _query("version", {"type": "string"}),
                ],
                "responses": _IDIS_ANSWER,
            },
            **{
                method: {
                    "summary": "Publish a template version (never deleted: DELETE is refused)",
                    "security": [{"bearer": []}],
                    "requestBody": _IDIS_JSON_BODY,
                    "responses": _IDIS_ANSWER,
                }
                for method in ("post", "put", "delete")
            },
        },
    },
}
