"""A handle's audit history over REST (the console's history page shows the same):

    GET /api/audit/{handle}[?limit=N]   newest first, at most 1000 rows

For the handle's administrators and server administrators, authenticated as on the
rest of the REST API. Each row: when (ISO 8601 UTC and Unix seconds), who, the
operation, the Handle response code, SHA-256 digests of the value list before and
after, and the detail (a refusal's reason).
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import unquote

from aiohttp import web

from idnode.registry.audit_history import MAX_ROWS, AuditEntry
from idnode.registry.names import InvalidName, check_handle

from .codec import ProtocolError, ResponseCode
from .codec.codes import rc_name
from .codec.jsonform import parse_int
from .rest_door import OPENAPI, RestApi, reply

RC = ResponseCode
AUDIT = "/api/audit"


def entry_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(e.at)),
        "atUnix": e.at,
        "actor": e.actor,
        "op": e.op,
        "handle": e.handle,
        "responseCode": e.rc,
        "response": rc_name(e.rc),
        "before": e.before_sha256,
        "after": e.after_sha256,
        "detail": e.detail,
    }


class AuditApi:
    def __init__(self, rest: RestApi) -> None:
        self.rest = rest

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(AUDIT + r"/{tail:[\s\S]+}", self.history)
        OPENAPI["paths"].update(PATHS)

    async def history(self, request: web.Request) -> web.Response:
        registry = self.rest.registry
        if registry is None:
            return reply(RC.OPERATION_NOT_SUPPORTED, status=404, message="no registry here")
        raw = request.raw_path.split("?", 1)[0][len(AUDIT) + 1 :]
        try:
            handle = unquote(raw, errors="strict")
            check_handle(handle)
            limit = parse_int(request.query.get("limit", "100"), "limit", 1, MAX_ROWS)
        except (InvalidName, UnicodeError) as exc:
            return reply(RC.INVALID_HANDLE, status=400, message=str(exc))
        except ProtocolError as exc:
            return reply(RC.INVALID_VALUE, status=400, message=exc.reason)
        who = await self.rest.need_identity(request)
        found = await registry.audit_history.of(handle, who, limit)
        if not found.ok:
            return reply(found.code, handle, message=found.message)
        return reply(RC.SUCCESS, handle, entries=[entry_json(e) for e in found.entries])


PATHS: dict[str, Any] = {
    AUDIT + "/{handle}": {
        "get": {
            "summary": "A handle's audit history, newest first (its administrators and "
            "server administrators)",
            "parameters": [
                {"name": "handle", "in": "path", "required": True, "schema": {"type": "string"}},
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ROWS},
                },
            ],
            "responses": {
                "200": {"description": "entries: at, actor, op, responseCode, ..."},
                "4XX": {"description": "refused: the Handle response code and why"},
                "503": {"description": "the registry cannot be reached: try again"},
            },
        }
    }
}
