"""Per-prefix statistics over REST (registry/statistics.py): a child node reports them
to the node above, whose operators read them; a node's operators read its own counts.

    POST /api/statistics          {"node", "reports": [{prefix, day, seq, registrations,
                                  resolutions, errors}]}   a child's report (the
                                  administrator of each prefix at this node)
    GET  /api/statistics[?prefix=&from=&to=]   reports received here: per (prefix, day)
                                  totals over the reporting nodes, and each node's report
                                  (server administrators; a prefix's admin for its prefix)
    GET  /api/statistics/local[?prefix=&from=&to=]   this node's own counts and whether
                                  the node above has acknowledged them (server admins)

A report is a cumulative snapshot: the top keeps the highest ``seq`` per (node, prefix,
day), so a resend is acknowledged and changes nothing. The answer to a POST gives each
report's response code; a POST none of whose reports is accepted is refused as a whole
(403 when the sender administers none of the prefixes).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from idnode.errors import RequestRefused
from idnode.registry.statistics import (
    DAY,
    MAX_REPORTS,
    local_json,
    parse_report,
    received_json,
    totals,
)

from .codec import ResponseCode
from .codec.jsonform import loads
from .rest_door import MAX_BODY, OPENAPI, RestApi, http_status, reply

if TYPE_CHECKING:
    from idnode.registry.auth import Identity
    from idnode.registry.statistics import Statistics

RC = ResponseCode
R = TypeVar("R")
STATISTICS = "/api/statistics"
NODE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class StatisticsApi:
    def __init__(self, rest: RestApi) -> None:
        self.rest = rest

    @property
    def stats(self) -> Statistics:
        if self.rest.registry is None:
            raise web.HTTPNotFound()
        return self.rest.registry.statistics

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(STATISTICS, self.receive)
        app.router.add_get(STATISTICS, self.received)
        app.router.add_get(STATISTICS + "/local", self.local)
        OPENAPI["paths"].update(PATHS)

    async def receive(self, request: web.Request) -> web.Response:
        who = await self.rest._need_identity(request)
        try:
            if request.content_length is not None and request.content_length > MAX_BODY:
                raise ValueError("body over 1 MiB")
            doc = loads(await request.read())  # ProtocolError is a ValueError
            if not isinstance(doc, dict):
                raise ValueError("the body must be a JSON object")
            node, reports = doc.get("node"), doc.get("reports")
            if not isinstance(node, str) or not NODE.match(node):
                raise ValueError("node must be 1-64 letters, digits, '.', '_' or '-'")
            if not isinstance(reports, list) or not 0 < len(reports) <= MAX_REPORTS:
                raise ValueError(f"reports must be a list of 1 to {MAX_REPORTS} reports")
            rows = [parse_report(r) for r in reports]
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        try:
            results = await self.stats.receive(who, node, rows)
        except RequestRefused as exc:
            return _refused(exc)
        out = [
            {"prefix": r.prefix, "day": r.day, "seq": r.seq, "responseCode": rc}
            | ({"message": msg} if msg else {})
            for r, rc, msg in results
        ]
        refused = [(rc, msg) for _, rc, msg in results if rc != RC.SUCCESS]
        if len(refused) == len(results):
            rc, msg = refused[0]
            return reply(rc, status=http_status(rc), message=msg, results=out)
        return reply(RC.SUCCESS, results=out)

    def _range(self, request: web.Request) -> tuple[str | None, str, str]:
        q = request.query
        prefix = q.get("prefix") or None
        since, until = q.get("from", ""), q.get("to", "9999-12-31")
        for name, v in (("from", since), ("to", until)):
            if v and not DAY.match(v):
                raise ValueError(f"{name} must be YYYY-MM-DD")
        return prefix, since, until

    async def _rows(
        self,
        request: web.Request,
        query: Callable[[Identity, str | None, str, str], Awaitable[list[R]]],
    ) -> list[R] | web.Response:
        """The rows ``query`` gives the caller for the request's range, or the refusal."""
        who = await self.rest._need_identity(request)
        try:
            prefix, since, until = self._range(request)
        except ValueError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=str(exc))
        try:
            return await query(who, prefix, since, until)
        except RequestRefused as exc:
            return _refused(exc)

    async def received(self, request: web.Request) -> web.Response:
        rows = await self._rows(request, self.stats.received)
        if isinstance(rows, web.Response):
            return rows
        return reply(RC.SUCCESS, statistics=totals(rows), reports=[received_json(r) for r in rows])

    async def local(self, request: web.Request) -> web.Response:
        rows = await self._rows(request, self.stats.local)
        if isinstance(rows, web.Response):
            return rows
        return reply(RC.SUCCESS, statistics=[local_json(r) for r in rows])


def _refused(exc: RequestRefused) -> web.Response:
    return reply(exc.rc, status=http_status(exc.rc), message=exc.message)


_RANGE = [
    {"name": "prefix", "in": "query", "schema": {"type": "string"}},
    {"name": "from", "in": "query", "schema": {"type": "string", "format": "date"}},
    {"name": "to", "in": "query", "schema": {"type": "string", "format": "date"}},
]
_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}
_REFUSED = {
    "description": "the Handle response code and why (bad input, not authenticated,"
    " not an administrator of the prefix, registry unavailable)"
} | _JSON


def _answers(ok: str) -> dict[str, Any]:
    return {"200": {"description": ok} | _JSON, "4XX": _REFUSED, "503": _REFUSED}


PATHS: dict[str, Any] = {
    STATISTICS: {
        "post": {
            "summary": "A child node's per-prefix, per-day statistics (cumulative snapshots)",
            "responses": _answers("each report's response code"),
        },
        "get": {
            "summary": "Statistics received here: totals per prefix and day, and each report",
            "parameters": _RANGE,
            "responses": _answers("statistics"),
        },
    },
    STATISTICS + "/local": {
        "get": {
            "summary": "This node's own counts and whether they were reported upward",
            "parameters": _RANGE,
            "responses": _answers("statistics"),
        }
    },
}
