"""``/console/batches``: upload a JSONL or CSV file of identifiers and watch it run.

The page's script (static/console_batches.js; the CSP allows no inline script) posts the
file with fetch() to ``POST /console/batches`` (the session's CSRF token in
X-CSRF-Token), then polls ``GET /console/batches/{id}.json`` for the progress bar and
the per-line results; both answer exactly what ``POST/GET /api/batches`` answer, from
the same code (rest_batches_door.py), for the signed-in administrator.
"""

from __future__ import annotations

import time

from aiohttp import web

from idnode.registry.batch_jobs import MAX_LINES

from ..rest_batches_door import BatchesApi
from ..rest_door import MAX_BODY
from .console_tools import ToolPage
from .signin import check_csrf


class BatchesPage(ToolPage):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/console/batches", self.page)
        app.router.add_post("/console/batches", self.upload)
        app.router.add_get("/console/batches/{id}.json", self.progress)

    @property
    def api(self) -> BatchesApi:
        return BatchesApi(self.rest)

    async def page(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        jobs = await self.registry.batch_jobs.of(user.identity)
        return self.render(
            request,
            "console_batches.html",
            user,
            jobs=[{**j.to_json(results=False), "created": when(j.created_at)} for j in jobs],
            max_lines=MAX_LINES,
            max_mib=MAX_BODY >> 20,
            shown=request.query.get("job", ""),
        )

    async def upload(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        await check_csrf(request, user)
        return await self.api.start(request, user.identity)

    async def progress(self, request: web.Request) -> web.Response:
        user = await self.user(request)
        results = request.query.get("results", "true").lower() != "false"  # polls: false
        response = await self.api.progress(request.match_info["id"], user.identity, results=results)
        response.headers["Cache-Control"] = "private, no-store"
        return response


def when(seconds: float) -> str:
    """A time as the console shows it: UTC, to the second (the same on every worker)."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))
