"""API keys over REST (registry/key_admin.py): an administrator makes, lists and revokes
the keys that act as itself; a server administrator sees and revokes every key.

    GET    /api/api-keys             {"keys": [{"id", "admin", "label", "createdAt"}]}
    POST   /api/api-keys             {"label": "...", "admin": "300:0.NA/88.166"?}
           -> 201 {"key": "idn_...", "id", ...}   the key is shown here, and never again
    DELETE /api/api-keys/{id}        revoke (id: at least 8 hex digits of the key's id)

A key revoked here stops authenticating at once on this worker; other workers keep a
credential they checked for at most 10 s (the REST door's credential cache).
"""

from __future__ import annotations

import hashlib
from typing import Any

from aiohttp import web

from idnode.registry.api_keys import ApiKey, ApiKeyError
from idnode.registry.auth import Identity
from idnode.registry.key_admin import ApiKeyRefused

from .codec import ResponseCode
from .rest_door import RestPart, json_body, reply

RC = ResponseCode
API_KEYS = "/api/api-keys"


def key_json(k: ApiKey) -> dict[str, Any]:
    return {"id": k.id, "admin": str(k.admin), "label": k.label, "createdAt": k.created_at}


class ApiKeysApi(RestPart):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(API_KEYS, self.list_all)
        app.router.add_post(API_KEYS, self.post)
        app.router.add_delete(API_KEYS + "/{id}", self.delete)

    async def list_all(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        return reply(RC.SUCCESS, keys=[key_json(k) for k in await self.keys(who)])

    async def keys(self, who: Identity) -> list[ApiKey]:
        return await self.registry.api_keys.visible(who)

    async def post(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        body = await json_body(request, b"{}")
        if isinstance(body, web.Response):
            return body
        if not isinstance(body, dict) or set(body) - {"label", "admin"}:
            return reply(
                RC.INVALID_VALUE, status=400, message='the body is {"label": ..., "admin": ...}'
            )
        label, admin = body.get("label", ""), body.get("admin")
        if not isinstance(label, str) or not (admin is None or isinstance(admin, str)):
            return reply(RC.INVALID_VALUE, status=400, message="label and admin are strings")
        try:
            target = Identity.parse(admin) if admin else None
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        return await self.create(who, label, target)

    async def create(
        self, who: Identity, label: str, admin: Identity | None = None
    ) -> web.Response:
        try:
            key, made = await self.registry.api_keys.create(who, label, admin)
        except ApiKeyRefused as exc:
            return reply(RC.INSUFFICIENT_PERMISSIONS, status=403, message=str(exc))
        except ApiKeyError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        return reply(RC.SUCCESS, status=201, key=key, **key_json(made))

    async def delete(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        return await self.revoke(who, request.match_info["id"])

    async def revoke(self, who: Identity, key_id: str) -> web.Response:
        try:
            gone = await self.registry.api_keys.revoke(who, key_id)
        except ApiKeyRefused as exc:
            return reply(
                RC.HANDLE_NOT_FOUND, status=404 if not exc.found else 403, message=str(exc)
            )
        except ApiKeyError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        self.rest.forget_credential(
            lambda token: hashlib.sha256(token.encode()).hexdigest() == gone.sha256
        )
        self.registry.credentials.forget_api_key(gone.sha256)  # its recent proof too
        return reply(RC.SUCCESS, **key_json(gone))
