"""``/console/applications``: apply for a prefix (the prefix lifecycle's application,
as ``POST /api/prefix-applications`` makes it, recorded with the signed-in
administrator as the applicant) and see one's own applications and their state. The
operator's side (approve, reject) is the dashboard's and the REST API's.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from idnode.errors import RequestRefused

from .console_tools import ToolPage
from .signin import check_csrf

PAGE = "/console/applications"
FIELDS = ("prefix", "secret", "pubkey", "site", "contact_name", "contact_email")


class ApplicationsPage(ToolPage):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(PAGE, self.page)
        app.router.add_post(PAGE, self.apply)

    async def _show(
        self,
        request: web.Request,
        *,
        status: int = 200,
        form: dict[str, str] | None = None,
        problem: str = "",
        submitted: dict[str, object] | None = None,
    ) -> web.Response:
        user = await self.user(request)
        rows = await self.registry.own_applications.of(user.identity)
        mine = [
            {
                "id": r.id,
                "prefix": r.prefix,
                "mode": r.mode,
                "status": r.status,
                "reason": r.reason,
                "created_at": r.created_at,
            }
            for r in rows
        ]
        return self.render(
            request,
            "console_applications.html",
            user,
            status=status,
            form={name: "" for name in FIELDS} | (form or {}),
            problem=problem,
            submitted=submitted,
            mine=mine,
        )

    async def page(self, request: web.Request) -> web.Response:
        return await self._show(request)

    async def apply(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        await check_csrf(request, user)
        posted = await request.post()
        form = {name: str(posted.get(name, "")).strip() for name in FIELDS}
        site = None
        if form["site"]:
            try:
                site = base64.b64decode(form["site"], validate=True)
            except binascii.Error:
                return await self._show(
                    request, status=400, form=form, problem="HS_SITE: not base64"
                )
        contact = {k: form["contact_" + k] for k in ("name", "email") if form["contact_" + k]}
        try:
            row = await self.registry.applications.apply(
                form["prefix"],
                secret=form["secret"].encode() if form["secret"] else None,
                pubkey=form["pubkey"].encode() if form["pubkey"] else None,
                site=site,
                hosted=site is None,
                contact=contact,
                applicant=str(user.identity),
                source=request.remote or "",
            )
        except RequestRefused as exc:
            return await self._show(request, status=400, form=form, problem=exc.message)
        return await self._show(request, submitted={"id": row.id, "prefix": row.prefix})
