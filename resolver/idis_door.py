"""The IDIS management facade (the SNMS interface operators already script against).

``POST /identity/token``, ``/identityv2/data`` (detail, create, update, delete and the
batch calls, at most 2000 records each with a ``{handle, code, msg}`` per record) and
``/snms/api/v5/template``, mapped onto the same registry service as every other front
door. Answers are ``{"status", "message", "data"}`` with the SNMS status codes: 1 ok,
-1 not logged in, -2 business error, -3 no permission, -4 internal error.

Login: ``username`` is an admin key as INDEX:HANDLE (e.g. 300:0.NA/88.166), ``password``
its HS_SECKEY. The token (24 h) is sealed with the node key, so every worker and every
node sharing the key file accepts it without shared state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from idnode.errors import IdnodeError
from idnode.registry.auth import Identity
from idnode.registry.credentials import TOKEN_SECONDS
from idnode.registry.login_guard import Throttled
from idnode.registry.service import OUTCOME_UNKNOWN, UNAVAILABLE, outcome_unknown
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.statistics import USAGE
from idnode.registry.templates import TEMPLATE_INDEX

from .codec import HandleValue, Permission, ProtocolError, ResponseCode, decode_values
from .codec.jsonform import loads, value_from_json, value_to_json
from .core import Resolution, answer
from .logs import Repeats

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from .core import Resolver

log = logging.getLogger("idnode.idis")
_down = Repeats(log)
RC = ResponseCode
OK, NOT_LOGGED_IN, BUSINESS, NO_PERMISSION, INTERNAL = 1, -1, -2, -3, -4
MAX_BATCH = 2000
PUBLIC = int(Permission.ADMIN_READ | Permission.ADMIN_WRITE | Permission.PUBLIC_READ)
PRIVATE = int(Permission.ADMIN_READ | Permission.ADMIN_WRITE)

Handler = Callable[[web.Request], Awaitable[web.Response]]


def result(status: int, message: str = "success", data: Any = None) -> web.Response:
    return web.json_response(
        {"status": status, "message": message, "data": data},
        dumps=lambda o: json.dumps(o, ensure_ascii=False),
    )


def batch_result(items: list[dict[str, Any]]) -> web.Response:
    """A batch's answer: a {handle, code, msg} per record, ok only if every one is."""
    failed = sum(1 for r in items if r["code"] != OK)
    if not failed:
        return result(OK, "success", items)
    return result(BUSINESS, f"{failed} of {len(items)} records failed", items)


def status_of(rc: int) -> int:
    if rc == RC.SUCCESS:
        return OK
    if rc in (RC.INSUFFICIENT_PERMISSIONS, RC.INVALID_ADMIN):
        return NO_PERMISSION
    if rc in (RC.AUTHENTICATION_NEEDED, RC.AUTHENTICATION_FAILED):
        return NOT_LOGGED_IN
    if rc == RC.ERROR:
        return INTERNAL
    return BUSINESS


def _registry_down(request: web.Request, exc: BaseException) -> web.Response:
    """The registry is unreachable (-4, "try again") or went away while committing (-4,
    "may have taken effect": never reported as a failure). IDIS has no status of its
    own for either; the message tells them apart."""
    if outcome_unknown(exc):
        _down.warning("%s %s: outcome unknown (%s)", request.method, request.path, exc)
        return result(INTERNAL, OUTCOME_UNKNOWN)
    _down.warning("%s %s: registry unavailable (%s)", request.method, request.path, exc)
    return result(INTERNAL, UNAVAILABLE)


def _item_down(handle: object, exc: BaseException) -> dict[str, Any]:
    """A batch record the registry could not take: its own outcome, so that the records
    committed before it are still reported as done."""
    msg = OUTCOME_UNKNOWN if outcome_unknown(exc) else UNAVAILABLE
    return {"handle": handle, "code": INTERNAL, "msg": msg}


class _Refused(IdnodeError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


class IdisApi:
    def __init__(self, core: Resolver, registry: RegistryService | None) -> None:
        self.core = core
        self.registry = registry

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/identity/token", self._guard(self.token, login=False))
        r.add_get("/identityv2/data/detail", self._guard(self.detail, login=False))
        r.add_post("/identityv2/data", self._guard(self.create))
        r.add_put("/identityv2/data", self._guard(self.update))
        r.add_delete("/identityv2/data", self._guard(self.delete))
        r.add_post("/identityv2/data/batchCreate", self._guard(self.batch_create))
        r.add_put("/identityv2/data/batchUpdate", self._guard(self.batch_update))
        r.add_delete("/identityv2/data/batchDelete", self._guard(self.batch_delete))
        r.add_get("/snms/api/v5/template", self._guard(self.template_get, login=False))
        r.add_post("/snms/api/v5/template", self._guard(self.template_put))
        r.add_put("/snms/api/v5/template", self._guard(self.template_put))
        r.add_delete("/snms/api/v5/template", self._guard(self.template_delete))

    def _guard(self, fn: Callable[..., Awaitable[web.Response]], login: bool = True) -> Handler:
        """Parse, authenticate and turn every failure into an SNMS status, never a 500."""

        async def handler(request: web.Request) -> web.Response:
            try:
                registry = self.registry
                if registry is None:
                    raise _Refused(INTERNAL, "registration is not available on this node")
                if login:
                    return await fn(request, registry, self._who(request, registry))
                return await fn(request, registry)
            except _Refused as exc:
                return result(exc.status, exc.message)
            except web.HTTPException:
                raise
            except Exception as exc:
                if registry_unavailable(exc):  # expected in an outage: no traceback
                    return _registry_down(request, exc)
                log.exception("IDIS API call failed")
                return result(INTERNAL, "internal error; see the node log")

        return handler

    def _who(self, request: web.Request, registry: RegistryService) -> Identity:
        auth = request.headers.get("Authorization", "")
        token = auth[7:] if auth.lower().startswith("bearer ") else request.headers.get("token")
        if not token or not registry.credentials.issues_tokens:
            raise _Refused(NOT_LOGGED_IN, "log in first: POST /identity/token")
        if not token.isascii():  # tokens are base64; anything else cannot be one
            raise _Refused(NOT_LOGGED_IN, "the token is not ASCII, so not a token")
        who = registry.credentials.token_identity(token.strip())
        if who is None:
            raise _Refused(NOT_LOGGED_IN, "the token is not valid or has expired")
        return who

    @staticmethod
    async def _json(request: web.Request) -> Any:
        if request.content_length is not None and request.content_length > 16 * 1024 * 1024:
            raise _Refused(BUSINESS, "the body is over 16 MiB")
        try:
            return loads(await request.read() or b"null")
        except ProtocolError as exc:  # not JSON, not UTF-8, too deep, a lone surrogate
            raise _Refused(BUSINESS, exc.reason) from None

    # --- login ----------------------------------------------------------------------

    async def token(self, request: web.Request, registry: RegistryService) -> web.Response:
        body = await self._json(request)
        if not (
            isinstance(body, dict)
            and isinstance(body.get("username"), str)
            and isinstance(body.get("password"), str)
        ):
            raise _Refused(BUSINESS, 'give {"username": "300:0.NA/PREFIX", "password": ...}')
        index, colon, _ = body["username"].partition(":")
        if not (colon and index.isascii() and index.isdigit()):
            raise _Refused(BUSINESS, "username must be INDEX:HANDLE, e.g. 300:0.NA/88.166")
        try:
            who = Identity.parse(body["username"])
        except ValueError as exc:
            raise _Refused(BUSINESS, str(exc)) from None
        credentials = registry.credentials
        if not credentials.issues_tokens:
            raise _Refused(NOT_LOGGED_IN, "wrong username or password")
        try:
            ok = await registry.check_password(
                who, body["password"].encode(), client=request.remote or "", door="IDIS token"
            )
        except Throttled as exc:
            # Too many failed logins: "not logged in" for SNMS clients, 429 for HTTP ones.
            refused = result(NOT_LOGGED_IN, str(exc))
            refused.set_status(429)
            refused.headers["Retry-After"] = str(max(1, round(exc.retry_after + 0.5)))
            return refused
        if not ok:
            raise _Refused(NOT_LOGGED_IN, "wrong username or password")
        return result(OK, data={"token": credentials.issue_token(who), "expiresIn": TOKEN_SECONDS})

    # --- identifiers ------------------------------------------------------------------

    def _record(self, item: Any) -> tuple[str, tuple[HandleValue, ...]]:
        """An SNMS record {handle, templateVersion, value: [...]} as a handle and its values."""
        if not isinstance(item, dict) or not isinstance(item.get("handle"), str):
            raise _Refused(BUSINESS, 'each record needs "handle"')
        values: list[HandleValue] = []
        given = item.get("value") or []
        if not isinstance(given, list):
            raise _Refused(BUSINESS, f'{item["handle"]}: "value" must be a JSON array of values')
        for v in given:
            if not isinstance(v, dict):
                raise _Refused(BUSINESS, "each value must be an object")
            restricted = bool(v.get("auth"))  # field-level visibility: not public
            plain = {k: v[k] for k in ("index", "type", "data", "ttl") if k in v}
            try:
                hv = value_from_json(plain)
            except ProtocolError as exc:
                raise _Refused(BUSINESS, f"{item['handle']}: {exc.reason}") from None
            values.append(
                HandleValue(
                    hv.index,
                    hv.type,
                    hv.data,
                    hv.ttl,
                    hv.ttl_type,
                    hv.timestamp,
                    PRIVATE if restricted else PUBLIC,
                )
            )
        version = item.get("templateVersion")
        if not isinstance(version, str | int | None) or isinstance(version, bool):
            raise _Refused(BUSINESS, f'{item["handle"]}: "templateVersion" must be a string')
        if version:
            values = [v for v in values if v.index != TEMPLATE_INDEX]
            values.append(HandleValue(TEMPLATE_INDEX, "TEMPLATE", str(version).encode()))
        return item["handle"], tuple(values)

    async def detail(self, request: web.Request, registry: RegistryService) -> web.Response:
        handle = request.query.get("handle", "")
        if not handle:
            raise _Refused(BUSINESS, "give ?handle=")
        e = await self.core.entry(handle)
        res = e if isinstance(e, Resolution) else answer(e, (), ())
        USAGE.resolved(handle, res.response_code)  # per-prefix statistics
        if isinstance(e, Resolution):
            return result(status_of(e.response_code), e.message)
        if res.response_code != RC.SUCCESS:
            return result(status_of(res.response_code), res.message)
        values = decode_values(res.values_wire)
        tpl = next(
            (v.data.decode("utf-8", "replace") for v in values if v.index == TEMPLATE_INDEX), None
        )
        shown = [value_to_json(v) for v in values if v.index != TEMPLATE_INDEX]
        return result(OK, data={"handle": handle, "templateVersion": tpl, "value": shown})

    async def create(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        handle, values = self._record(await self._json(request))
        r = await registry.create(handle, values, who)
        return result(status_of(r.code), r.message or "success")

    async def update(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        handle, values = self._record(await self._json(request))
        r = await registry.put_values(handle, values, who)
        return result(status_of(r.code), r.message or "success")

    async def delete(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        body = await self._json(request)
        handle = body.get("handle") if isinstance(body, dict) else None
        if not isinstance(handle, str):
            raise _Refused(BUSINESS, 'give {"handle": ...}')
        r = await registry.delete(handle, who)
        return result(status_of(r.code), r.message or "success")

    def _batch(self, body: Any) -> list[Any]:
        items = body.get("data") if isinstance(body, dict) else body
        if not isinstance(items, list):
            raise _Refused(BUSINESS, "a batch is a JSON array of records")
        if len(items) > MAX_BATCH:
            raise _Refused(BUSINESS, f"{len(items)} records: at most {MAX_BATCH} a batch")
        return items

    async def batch_create(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        items = self._batch(await self._json(request))
        parsed: list[tuple[str, tuple[HandleValue, ...]]] = []
        per_item: list[dict[str, Any] | None] = []
        for item in items:
            try:
                parsed.append(self._record(item))
                per_item.append(None)
            except _Refused as exc:  # one bad record never stops the others
                name = item.get("handle") if isinstance(item, dict) else None
                per_item.append({"handle": name, "code": exc.status, "msg": exc.message})
        results = iter(await registry.batch_create(parsed, who))
        out = []
        for slot in per_item:
            if slot is None:
                r = next(results)
                slot = {"handle": r.handle, "code": status_of(r.code), "msg": r.message}
            out.append(slot)
        return batch_result(out)

    async def batch_update(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        out = []
        for item in self._batch(await self._json(request)):
            try:
                handle, values = self._record(item)
                r = await registry.put_values(handle, values, who)
                out.append(
                    {"handle": handle, "code": status_of(r.code), "msg": r.message or "success"}
                )
            except _Refused as exc:
                out.append(
                    {
                        "handle": item.get("handle") if isinstance(item, dict) else None,
                        "code": exc.status,
                        "msg": exc.message,
                    }
                )
            except Exception as exc:
                if not registry_unavailable(exc):
                    raise
                out.append(_item_down(item.get("handle") if isinstance(item, dict) else None, exc))
        return batch_result(out)

    async def batch_delete(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        out = []
        for item in self._batch(await self._json(request)):
            handle = item.get("handle") if isinstance(item, dict) else item
            if not isinstance(handle, str):
                out.append({"handle": None, "code": BUSINESS, "msg": "no handle"})
                continue
            try:
                r = await registry.delete(handle, who)
            except Exception as exc:
                if not registry_unavailable(exc):
                    raise
                out.append(_item_down(handle, exc))
                continue
            out.append({"handle": handle, "code": status_of(r.code), "msg": r.message or "success"})
        return batch_result(out)

    # --- templates ----------------------------------------------------------------------

    async def template_get(self, request: web.Request, registry: RegistryService) -> web.Response:
        prefix = request.query.get("prefix", "")
        if not prefix:
            raise _Refused(BUSINESS, "give ?prefix= (and optionally &version=)")
        found = await registry.templates.of_prefix(prefix, fresh=True)
        version = request.query.get("version")
        if version:
            t = found.get(version)
            if t is None:
                raise _Refused(BUSINESS, f"{prefix} has no template version {version}")
            return result(OK, data=json.loads(t.to_json()))
        return result(OK, data=[json.loads(t.to_json()) for t in found.values()])

    async def template_put(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        r = await registry.put_template(await self._json(request), who)
        return result(status_of(r.code), r.message or "success")

    async def template_delete(
        self, request: web.Request, registry: RegistryService, who: Identity
    ) -> web.Response:
        raise _Refused(
            BUSINESS,
            'templates are never deleted: publish a version with the items "enabled": false',
        )
