"""The Handle.Net-compatible REST API on the HTTP port (handle-protocol.md §7).

``/api/handles/{handle}`` (GET, PUT, DELETE), ``/api/handles?prefix=`` and
``/api/prefixes``, in the reference server's JSON and with its response-code → HTTP
status mapping, so clients such as pyhandle work unmodified. It only translates:
reads go through the resolver core, writes through the registry service.

Authentication: ``Authorization: Basic base64("{index}%3A{handle}:{secret}")`` for an
HS_SECKEY admin. Bad input gets a 4xx with a JSON body, never a 500.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

from aiohttp import web

from registry.auth import Identity
from registry.names import InvalidName, check_handle, prefix_of

from . import metrics
from .codec import ProtocolError, ResponseCode, decode_values
from .codec.jsonform import value_to_json, values_from_json
from .core import Resolution, answer

if TYPE_CHECKING:
    from registry.service import RegistryService

    from .core import Resolver

RC = ResponseCode
MAX_BODY = 1024 * 1024
API = "/api/handles"


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


class RestApi:
    def __init__(self, core: Resolver, registry: RegistryService | None) -> None:
        self.core = core
        self.registry = registry
        self._auth_cache: dict[str, tuple[float, Identity]] = {}

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(API, self.list_handles)
        app.router.add_get("/api/prefixes", self.prefixes)
        app.router.add_route("GET", API + "/{tail:.+}", self.get)
        app.router.add_route("PUT", API + "/{tail:.+}", self.put)
        app.router.add_route("DELETE", API + "/{tail:.+}", self.delete)
        app.router.add_get("/openapi.json", self.openapi)

    # --- request parsing -------------------------------------------------------------

    @staticmethod
    def _handle(request: web.Request) -> str:
        """The handle from the raw path; path tricks are refused, not normalised."""
        raw = request.raw_path.split("?", 1)[0][len(API) + 1 :]
        if "%2f" in raw.lower():
            raise InvalidName("an encoded '/' (%2F) is not allowed in a handle path")
        handle = unquote(raw)
        if any(part in (".", "..") for part in handle.split("/")):
            raise InvalidName("'.' and '..' are not handle parts")
        check_handle(handle)
        return handle

    @staticmethod
    def _query(request: web.Request) -> dict[str, list[str]]:
        return parse_qs(request.query_string, keep_blank_values=True)

    @staticmethod
    def _flag(q: dict[str, list[str]], name: str) -> bool:
        return q.get(name, ["false"])[-1].lower() in ("true", "1", "yes", "")

    async def _identity(self, request: web.Request) -> Identity | None:
        """The admin named by Basic credentials; None when there are none.

        Raises web.HTTPException (as JSON) when credentials are given but wrong.
        """
        header = request.headers.get("Authorization", "")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if self.registry is None or scheme.lower() not in ("basic", "bearer"):
            raise _JsonError(
                401,
                RC.INVALID_CREDENTIAL,
                "use Basic index%3Ahandle:secret, or Bearer <API key or token>",
            )
        cached = self._auth_cache.get(token)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        if scheme.lower() == "bearer":
            return await self._bearer(token.strip())
        try:
            user, _, secret = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
            who = Identity.parse(unquote(user))
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise _JsonError(
                401,
                RC.INVALID_CREDENTIAL,
                "Basic credentials must be index%3Ahandle:secret",
            ) from None
        if not await self.registry.check_password(who, secret.encode()):
            raise _JsonError(401, RC.AUTHENTICATION_FAILED, f"authentication of {who} failed")
        if len(self._auth_cache) > 10_000:
            self._auth_cache.clear()
        self._auth_cache[token] = (time.monotonic() + 10.0, who)
        return who

    async def _bearer(self, token: str) -> Identity:
        """An API key (idnode apikey create) or an IDIS login token (POST /identity/token)."""
        assert self.registry is not None
        row = await self.registry.store.api_key(hashlib.sha256(token.encode()).hexdigest())
        if row is not None:
            who = Identity(row[0], row[1])
        else:
            sealer = self.registry.sealer
            payload = sealer.open_token(token, 24 * 3600) if sealer is not None else None
            if payload is None:
                raise _JsonError(
                    401,
                    RC.AUTHENTICATION_FAILED,
                    "unknown API key, or an expired token",
                )
            who = Identity.parse(payload.decode())
        self._auth_cache[token] = (time.monotonic() + 10.0, who)
        return who

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
            indexes = tuple(int(i) for i in q.get("index", []))
        except ValueError:
            return reply(RC.INVALID_VALUE, handle, status=400, message="index must be integers")
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
        if res.response_code == RC.SUCCESS:
            values = [value_to_json(v) for v in decode_values(res.values_wire)]
            return reply(RC.SUCCESS, handle, values=values)
        if res.response_code == RC.VALUES_NOT_FOUND:
            return reply(RC.VALUES_NOT_FOUND, handle, status=200, values=[])
        return reply(res.response_code, handle, message=res.message)

    async def put(self, request: web.Request) -> web.Response:
        try:
            handle = self._handle(request)
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
            body = json.loads(await request.read() or b"[]")
            values = values_from_json(body)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return reply(RC.INVALID_VALUE, handle, status=400, message=f"body is not JSON: {exc}")
        except ProtocolError as exc:
            return reply(RC.INVALID_VALUE, handle, status=400, message=exc.reason)
        q = self._query(request)
        if q.get("index"):
            wanted = {int(i) for i in q["index"] if i.lstrip("-").isdigit()}
            chosen = tuple(v for v in values if v.index in wanted) or values
            rc, out = await registry.put_values(handle, chosen, who)
            return reply(rc, handle, message=getattr(out, "message", ""))
        mint = self._flag(q, "mintNewSuffix") if "mintNewSuffix" in q else False
        overwrite = self._flag(q, "overwrite") if "overwrite" in q else False
        rc, out = await registry.create(handle, values, who, overwrite=overwrite, mint=mint)
        if rc == RC.SUCCESS:
            return reply(RC.SUCCESS, getattr(out, "handle", handle), status=201)
        return reply(rc, handle, message=getattr(out, "message", ""))

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
                indexes = tuple(int(i) for i in q["index"])
            except ValueError:
                return reply(RC.INVALID_VALUE, handle, status=400, message="index: integers")
            rc, out = await self.registry.remove_values(handle, indexes, who)
        else:
            rc, out = await self.registry.delete(handle, who)
        return reply(rc, handle, message=getattr(out, "message", ""))

    async def list_handles(self, request: web.Request) -> web.Response:
        q = self._query(request)
        prefix = q.get("prefix", [""])[-1]
        if not prefix or self.registry is None:
            return reply(RC.INVALID_HANDLE, status=400, message="give ?prefix=")
        try:
            page = int(q.get("page", ["0"])[-1])
            size = int(q.get("pageSize", ["1000"])[-1])
        except ValueError:
            return reply(RC.INVALID_VALUE, status=400, message="page and pageSize: integers")
        if page < 0 or not 0 < size <= 10_000:
            return reply(RC.INVALID_VALUE, status=400, message="pageSize must be 1..10000")
        who = await self._need_identity(request)
        rc, out = await self.registry.list_handles("0.NA/" + prefix_of(prefix + "/"), who)
        if rc != RC.SUCCESS:
            return reply(rc, message=getattr(out, "message", ""))
        handles = list(getattr(out, "handles", ()))
        return reply(
            RC.SUCCESS,
            prefix=prefix,
            totalCount=str(len(handles)),
            page=page,
            pageSize=size,
            handles=handles[page * size : (page + 1) * size],
        )

    async def prefixes(self, request: web.Request) -> web.Response:
        return reply(RC.SUCCESS, prefixes=sorted(self.core.authority.homed))

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(OPENAPI)


class _JsonError(web.HTTPException):
    def __init__(self, status: int, rc: int, message: str) -> None:
        self.status_code = status
        super().__init__(
            text=json.dumps({"responseCode": rc, "message": message}),
            content_type="application/json",
            headers={"WWW-Authenticate": 'Basic realm="idnode"'} if status == 401 else None,
        )


_HANDLE_PARAM = {
    "name": "handle",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "prefix/suffix",
}
_JSON = {"application/json": {"schema": {"type": "object"}}}
OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "idnode Handle REST API",
        "version": "1",
        "description": "The reference Handle server's /api/handles contract.",
    },
    "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    "paths": {
        "/api/handles/{handle}": {
            "get": {
                "summary": "Resolve a handle",
                "parameters": [
                    _HANDLE_PARAM,
                    {"name": "index", "in": "query", "schema": {"type": "integer"}},
                    {"name": "type", "in": "query", "schema": {"type": "string"}},
                    {"name": "publicOnly", "in": "query", "schema": {"type": "boolean"}},
                ],
                "responses": {
                    "200": {"description": "values", "content": _JSON},
                    "404": {"description": "not found", "content": _JSON},
                },
            },
            "put": {
                "summary": "Create a handle, or add/replace values with ?index=",
                "security": [{"basic": []}],
                "parameters": [
                    _HANDLE_PARAM,
                    {"name": "index", "in": "query", "schema": {"type": "integer"}},
                    {"name": "overwrite", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "mintNewSuffix", "in": "query", "schema": {"type": "boolean"}},
                ],
                "requestBody": {"content": _JSON},
                "responses": {
                    "201": {"description": "created", "content": _JSON},
                    "200": {"description": "values written", "content": _JSON},
                    "409": {"description": "exists", "content": _JSON},
                },
            },
            "delete": {
                "summary": "Delete a handle, or values with ?index=",
                "security": [{"basic": []}],
                "parameters": [
                    _HANDLE_PARAM,
                    {"name": "index", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {
                    "200": {"description": "deleted", "content": _JSON},
                    "404": {"description": "not found", "content": _JSON},
                },
            },
        },
        "/api/handles": {
            "get": {
                "summary": "List the handles under a prefix",
                "security": [{"basic": []}],
                "parameters": [
                    {
                        "name": "prefix",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {"name": "page", "in": "query", "schema": {"type": "integer"}},
                    {"name": "pageSize", "in": "query", "schema": {"type": "integer"}},
                ],
                "responses": {"200": {"description": "handles", "content": _JSON}},
            },
        },
        "/api/prefixes": {
            "get": {
                "summary": "Prefixes homed here",
                "responses": {"200": {"description": "prefixes", "content": _JSON}},
            }
        },
    },
}
