"""The prefix lifecycle over REST (registry/prefix_applications.py): enterprises apply
for a prefix; operators (server administrators, authenticated as on the rest of the
REST API) list, approve and reject applications, and suspend and resume prefixes.

    POST /api/prefix-applications                 apply (no credentials needed)
    GET  /api/prefix-applications[?status=&limit=&after=]  newest first (operator)
    GET  /api/prefix-applications/{id}            one             (operator)
    POST /api/prefix-applications/{id}/approve    {"reason"}      (operator)
    POST /api/prefix-applications/{id}/reject     {"reason"}      (operator)
    GET  /api/suspended-prefixes                  list            (operator)
    POST /api/suspended-prefixes/{prefix}         suspend {"reason"} (operator)
    DELETE /api/suspended-prefixes/{prefix}       resume          (operator)

Answers are JSON with the Handle response code; refusals get the REST API's statuses.
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from aiohttp import web

from idnode.errors import RequestRefused
from idnode.registry.prefix_applications import LIST_LIMIT, application_json

from .codec import ResponseCode
from .codec.jsonform import loads
from .rest_door import MAX_BODY, OPENAPI, RestApi, http_status, reply

if TYPE_CHECKING:
    from idnode.registry.prefix_applications import PrefixApplications

RC = ResponseCode
APPLICATIONS = "/api/prefix-applications"
SUSPENDED = "/api/suspended-prefixes"


class PrefixApi:
    def __init__(self, rest: RestApi) -> None:
        self.rest = rest

    @property
    def apps(self) -> PrefixApplications:
        if self.rest.registry is None:
            raise web.HTTPNotFound()
        return self.rest.registry.applications

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(APPLICATIONS, self.apply)
        app.router.add_get(APPLICATIONS, self.list)
        app.router.add_get(APPLICATIONS + "/{id}", self.one)
        app.router.add_post(APPLICATIONS + "/{id}/approve", self.approve)
        app.router.add_post(APPLICATIONS + "/{id}/reject", self.reject)
        app.router.add_get(SUSPENDED, self.suspended)
        app.router.add_post(SUSPENDED + "/{prefix}", self.suspend)
        app.router.add_delete(SUSPENDED + "/{prefix}", self.resume)
        OPENAPI["paths"].update(PATHS)

    async def apply(self, request: web.Request) -> web.Response:
        try:
            doc = await _body(request)
            prefix = _text(doc, "prefix", required=True) or ""
            secret = _text(doc, "adminSecret")
            text_key = _text(doc, "adminPublicKey")
            pubkey = _key_bytes(text_key) if text_key is not None else None
            hosted = doc.get("hosted", False)
            if not isinstance(hosted, bool):
                raise ValueError("hosted must be true or false")
            site = _site(doc)
            contact = doc.get("contact", {})
            if not isinstance(contact, dict):
                raise ValueError("contact must be an object")
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        who = await self.rest.identity(request)
        applicant = str(who) if who is not None else f"anonymous from {request.remote or '?'}"
        try:
            row = await self.apps.apply(
                prefix,
                secret=secret.encode() if secret is not None else None,
                pubkey=pubkey,
                site=site,
                hosted=hosted,
                contact=contact,
                applicant=applicant,
                source=request.remote or "",
            )
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, status=201, application=application_json(row))

    async def list(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        status = request.query.get("status") or None
        if status is not None and status not in ("pending", "approved", "rejected"):
            return reply(RC.INVALID_VALUE, status=400, message="status: pending|approved|rejected")
        try:
            limit = _number(request, "limit") or LIST_LIMIT
            after = _number(request, "after")
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        try:
            rows = await self.apps.applications(who, status, limit=limit, after=after)
            existing = await self.apps.existing(rows)
        except RequestRefused as exc:
            return _refused(exc)
        page: dict[str, Any] = {}
        if rows and len(rows) >= min(limit, LIST_LIMIT):  # newest first: older ones follow
            page["next"] = f"{APPLICATIONS}?" + urlencode(
                {**({"status": status} if status else {}), "after": rows[-1].id}
            )
        return reply(
            RC.SUCCESS,
            applications=[application_json(r, existing.get(r.id)) for r in rows],
            **page,
        )

    async def one(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        app_id = _id(request)
        if app_id is None:
            return reply(RC.INVALID_VALUE, status=400, message="the id is a number")
        try:
            row = await self.apps.get(who, app_id)
            existing = await self.apps.existing([row])
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, application=application_json(row, existing.get(row.id)))

    async def approve(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=True)

    async def reject(self, request: web.Request) -> web.Response:
        return await self._decide(request, approve=False)

    async def _decide(self, request: web.Request, *, approve: bool) -> web.Response:
        who = await self.rest.need_identity(request)
        app_id = _id(request)
        try:
            if app_id is None:
                raise ValueError("the id is a number")
            reason = _text(await _body(request), "reason") or ""
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        try:
            if approve:
                row = await self.apps.approve(who, app_id, reason)
            else:
                row = await self.apps.reject(who, app_id, reason)
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, application=application_json(row))

    async def suspended(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        try:
            rows = await self.apps.suspended(who)
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, suspended=[{"prefix": p, "reason": r} for p, r in rows])

    async def suspend(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        prefix = request.match_info["prefix"]
        try:
            reason = _text(await _body(request), "reason") or ""
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        try:
            fresh = await self.apps.suspend(who, prefix, reason)
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, prefix=prefix, suspended=True, changed=fresh)

    async def resume(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        prefix = request.match_info["prefix"]
        try:
            await self.apps.resume(who, prefix)
        except RequestRefused as exc:
            return _refused(exc)
        return reply(RC.SUCCESS, prefix=prefix, suspended=False)


def _refused(exc: RequestRefused) -> web.Response:
    return reply(exc.rc, status=http_status(exc.rc), message=exc.message)


def _number(request: web.Request, name: str) -> int | None:
    """A query parameter that is a positive number (None when absent)."""
    raw = request.query.get(name)
    if raw is None:
        return None
    if not (raw.isascii() and raw.isdigit() and len(raw) < 19) or int(raw) < 1:
        raise ValueError(f"{name} is a positive number")
    return int(raw)


def _id(request: web.Request) -> int | None:
    raw = request.match_info.get("id", "")
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ValueError("body over 1 MiB")
    raw = await request.read()
    if not raw.strip():
        return {}
    doc = loads(raw)  # ProtocolError is a ValueError
    if not isinstance(doc, dict):
        raise ValueError("the body must be a JSON object")
    return doc


def _text(doc: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    v = doc.get(name)
    if v is None:
        if required:
            raise ValueError(f"give {name}")
        return None
    if not isinstance(v, str):
        raise ValueError(f"{name} must be a string")
    return v


def _key_bytes(text: str) -> bytes:
    """A PEM public key as text, or the reference's key encoding in base64."""
    if text.lstrip().startswith("-----BEGIN"):
        return text.encode()
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("adminPublicKey: PEM text, or base64 of the key") from None


def _site(doc: dict[str, Any]) -> bytes | None:
    """The enterprise node's HS_SITE: ``site``, base64 of the HS_SITE data. The node never
    fetches a site from an address a caller names (an anonymous caller would make it
    connect anywhere and wait on whatever answers): ``idnode prefix apply --site-from
    HOST:PORT`` asks the enterprise node itself and sends the site."""
    if "siteFrom" in doc:
        raise ValueError(
            "siteFrom is not accepted: send the enterprise node's HS_SITE as site (base64 "
            "of the HS_SITE data); idnode prefix apply --site-from HOST:PORT fetches it "
            "on your side and sends it"
        )
    site = _text(doc, "site")
    if site is None:
        return None
    try:
        return base64.b64decode(site, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("site: base64 of the HS_SITE data") from None


_OUT = {"description": "the Handle response code, and the application or why not"}
_J = {"content": {"application/json": {"schema": {"type": "object"}}}}
_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
_PREFIX = {"name": "prefix", "in": "path", "required": True, "schema": {"type": "string"}}
_REASON = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {"type": "object", "properties": {"reason": {"type": "string"}}}
        }
    },
}
_ANSWERS = {"200": _OUT | _J, "4XX": _OUT | _J, "503": _OUT | _J}
PATHS: dict[str, Any] = {
    APPLICATIONS: {
        "post": {
            "summary": "Apply for a prefix under one this node homes (hosted here, or "
            "delegated to the enterprise's node)",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "required": ["prefix"],
                            "properties": {
                                "prefix": {"type": "string"},
                                "adminSecret": {"type": "string"},
                                "adminPublicKey": {
                                    "type": "string",
                                    "description": "PEM, or base64 of the reference encoding",
                                },
                                "hosted": {"type": "boolean"},
                                "site": {"type": "string", "description": "base64 HS_SITE"},
                                "contact": {"type": "object"},
                            },
                        }
                    }
                },
            },
            "responses": {"201": _OUT | _J, "4XX": _OUT | _J, "503": _OUT | _J},
        },
        "get": {
            "summary": "List applications, newest first (server administrators); "
            "next names the following page",
            "parameters": [
                {
                    "name": "status",
                    "in": "query",
                    "schema": {"type": "string", "enum": ["pending", "approved", "rejected"]},
                },
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": LIST_LIMIT},
                },
                {
                    "name": "after",
                    "in": "query",
                    "description": "only applications older than this id (the next page)",
                    "schema": {"type": "integer", "minimum": 1},
                },
            ],
            "responses": _ANSWERS,
            "security": [{"basic": []}, {"bearer": []}],
        },
    },
    APPLICATIONS + "/{id}": {
        "get": {"summary": "One application", "parameters": [_ID], "responses": _ANSWERS}
    },
    APPLICATIONS + "/{id}/approve": {
        "post": {
            "summary": "Approve: create the prefix, home or delegate it, register it upward",
            "parameters": [_ID],
            "requestBody": _REASON,
            "responses": _ANSWERS,
        }
    },
    APPLICATIONS + "/{id}/reject": {
        "post": {
            "summary": "Reject, with a reason",
            "parameters": [_ID],
            "requestBody": _REASON,
            "responses": _ANSWERS,
        }
    },
    SUSPENDED: {"get": {"summary": "Suspended prefixes", "responses": _ANSWERS}},
    SUSPENDED + "/{prefix}": {
        "post": {
            "summary": "Suspend a prefix: its handles answer RC 605, writes are refused",
            "parameters": [_PREFIX],
            "requestBody": _REASON,
            "responses": _ANSWERS,
        },
        "delete": {"summary": "Resume a prefix", "parameters": [_PREFIX], "responses": _ANSWERS},
    },
}
