"""``/console/prefixes/{prefix}/templates``: a prefix's metadata template versions, one
version's document (``?version=``), and a form to publish a new version as JSON. A
refused document comes back in the form with the template's own error (which item,
what is wrong) and the text as typed. The same code as ``/api/templates/{prefix}``
(rest_templates_door.py): publishing needs an administrator of the prefix.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

from aiohttp import web

from idnode.registry.names import InvalidName, check_prefix

from ..rest_templates_door import TemplatesApi
from .console_tools import ToolPage
from .signin import check_csrf

MAX_DOCUMENT = 256 * 1024  # characters of a template document typed into the form


class TemplatesPage(ToolPage):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console/templates", self.choose)
        app.router.add_get("/console/prefixes/{prefix}/templates", self.page)
        app.router.add_post("/console/prefixes/{prefix}/templates", self.publish)

    @property
    def api(self) -> TemplatesApi:
        return TemplatesApi(self.rest)

    async def _show(
        self,
        request: web.Request,
        *,
        status: int = 200,
        document: str = "",
        problem: str = "",
        published: str = "",
    ) -> web.Response:
        user = await self.user(request)
        prefix = request.match_info["prefix"]
        try:
            check_prefix(prefix)
        except InvalidName as exc:
            raise web.HTTPNotFound(text=str(exc)) from None
        versions = await self.api.versions(prefix)
        wanted = request.query.get("version") or published
        shown = next((v for v in versions if v["version"] == wanted), None)
        if shown is None and versions:
            shown = versions[-1]
        if not document:
            document = _draft(prefix, versions)
        return self.render(
            request,
            "console_templates.html",
            user,
            status=status,
            prefix=prefix,
            versions=[v["version"] for v in versions],
            shown=shown,
            shown_text=json.dumps(shown, ensure_ascii=False, indent=2) if shown else "",
            document=document,
            problem=problem,
            published=published,
        )

    async def page(self, request: web.Request) -> web.Response:
        return await self._show(request)

    async def choose(self, request: web.Request) -> web.Response:
        """Which prefix's templates: ``?prefix=`` goes there; else the homed prefixes."""
        user = await self.user(request)
        wanted = request.query.get("prefix", "").strip()
        if wanted:
            try:
                check_prefix(wanted)
            except InvalidName as exc:
                return self.render(
                    request, "console_templates_choose.html", user, status=400,
                    prefixes=sorted(self.registry.authority.homed), problem=str(exc),
                )  # fmt: skip
            raise web.HTTPSeeOther(f"/console/prefixes/{quote(wanted)}/templates")
        return self.render(
            request, "console_templates_choose.html", user,
            prefixes=sorted(self.registry.authority.homed), problem="",
        )  # fmt: skip

    async def publish(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        await check_csrf(request, user)
        text = str((await request.post()).get("document", ""))
        if len(text) > MAX_DOCUMENT:
            return await self._show(
                request, status=413, problem=f"over {MAX_DOCUMENT} characters", document=""
            )
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            problem = f"not JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
            return await self._show(request, status=400, document=text, problem=problem)
        answer = await self.api.publish(request.match_info["prefix"], doc, user.identity)
        if answer.status >= 300:
            body = json.loads(answer.text or "{}")
            return await self._show(
                request, status=answer.status, document=text, problem=body.get("message", "")
            )
        version = doc.get("version", "") if isinstance(doc, dict) else ""
        return await self._show(request, published=str(version))


def _draft(prefix: str, versions: list[dict[str, Any]]) -> str:
    """The form's starting text: the latest version with its version cleared (a new
    version keeps every item), or a one-item example for a prefix with none."""
    if versions:
        doc = dict(versions[-1])
        doc["version"] = ""
    else:
        doc = {
            "prefix": prefix,
            "version": "1.0",
            "industry": "",
            "description": "",
            "items": [{"key": "name", "index": 2001, "name": "", "type": "string"}],
        }
    return json.dumps(doc, ensure_ascii=False, indent=2)
