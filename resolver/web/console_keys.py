"""``/console/api-keys``: an administrator's API keys: create one with a label (shown
once, on the page that answers the POST, never stored in the clear), list them, revoke
one after a confirmation page. The same code as ``/api/api-keys``
(rest_api_keys_door.py): a server administrator sees and revokes every key.
"""

from __future__ import annotations

import json

from aiohttp import web

from ..rest_api_keys_door import ApiKeysApi, key_json
from .console_tools import ToolPage
from .signin import check_csrf

PAGE = "/console/api-keys"


class KeysPage(ToolPage):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PAGE, self.page)
        app.router.add_post(PAGE, self.create)
        app.router.add_get(PAGE + "/{id}/revoke", self.confirm)
        app.router.add_post(PAGE + "/{id}/revoke", self.revoke)

    @property
    def api(self) -> ApiKeysApi:
        return ApiKeysApi(self.rest)

    async def _show(
        self,
        request: web.Request,
        *,
        status: int = 200,
        new_key: str = "",
        notice: str = "",
        problem: str = "",
    ) -> web.Response:
        user = await self.user(request)
        keys = [key_json(k) for k in await self.api.keys(user.identity)]
        return self.render(
            request,
            "console_keys.html",
            user,
            status=status,
            keys=sorted(keys, key=lambda k: -int(k["createdAt"])),
            new_key=new_key,
            notice=notice,
            problem=problem,
        )

    async def page(self, request: web.Request) -> web.Response:
        return await self._show(request)

    async def create(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        await check_csrf(request, user)
        label = str((await request.post()).get("label", ""))
        answer = await self.api.create(user.identity, label)
        body = json.loads(answer.text or "{}")
        if answer.status != 201:
            return await self._show(request, status=answer.status, problem=body.get("message", ""))
        return await self._show(request, new_key=body["key"])

    async def _key(self, request: web.Request) -> dict[str, object] | None:
        user = await self.user(request)
        wanted = request.match_info["id"].lower()
        for k in await self.api.keys(user.identity):
            if k.id == wanted:
                return key_json(k)
        return None

    async def confirm(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        key = await self._key(request)
        if key is None:
            return await self._show(request, status=404, problem=request.match_info["id"])
        return self.render(request, "console_key_revoke.html", user, key=key)

    async def revoke(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        await check_csrf(request, user)
        key_id = request.match_info["id"]
        answer = await self.api.revoke(user.identity, key_id)
        if answer.status != 200:
            body = json.loads(answer.text or "{}")
            return await self._show(request, status=answer.status, problem=body.get("message", ""))
        return await self._show(request, notice=key_id)
