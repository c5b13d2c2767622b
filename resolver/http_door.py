"""HTTP front door: the native Handle tunnel, the REST API (rest_door.py), /healthz and
/metrics.

The tunnel takes a Handle message POSTed with Content-Type application/x-hdl-message
to any path the other routes do not claim: the reference Java library posts to the
handle's own path (``POST /20.500.12345%2Fabc``, ``POST /%2F`` for site info).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from aiohttp import web

from . import metrics
from .codec.codes import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH
from .handle_service import HandleService
from .idis_door import IdisApi
from .rest_door import MAX_BODY, RestApi

if TYPE_CHECKING:
    from .health import HealthCheck

HDL_MESSAGE = "application/x-hdl-message"


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status, text=json.dumps({"error": message}), content_type="application/json"
    )


def build_app(service: HandleService, health: HealthCheck) -> web.Application:
    # The larger of a Handle message and a REST body (the REST door checks its own limit).
    app = web.Application(client_max_size=max(MAX_MESSAGE_LENGTH + ENVELOPE_SIZE, MAX_BODY))
    # REST sessions follow the Handle sessions' lifetimes and cap (no registry: none).
    s = service.sessions
    rest = RestApi(service.core, service.registry)
    if s is not None:
        rest = RestApi(
            service.core,
            service.registry,
            s.session_ttl,
            anonymous_ttl=s.challenge_ttl,
            sessions_max=s.headroom.limit,
        )
    rest.add_routes(app)
    IdisApi(service.core, service.registry).add_routes(app)

    async def tunnel(request: web.Request) -> web.StreamResponse:
        if request.content_type != HDL_MESSAGE:
            if request.path != "/":
                return _json_error(404, f"no such resource: POST {request.path}")
            return _json_error(415, f"POST / takes Content-Type: {HDL_MESSAGE}")
        body = await request.read()
        r = service.respond(body, "http", request.remote or "")
        if r is not None and not isinstance(r, bytes):
            r = await r
        if r is None:
            return _json_error(400, "the body is not a Handle message and cannot be answered")
        return web.Response(body=r, content_type=HDL_MESSAGE)

    async def healthz(request: web.Request) -> web.Response:
        report = await health.check()
        return web.Response(
            status=200 if report["status"] == "ok" else 503,
            text=json.dumps(report),
            content_type="application/json",
        )

    async def metrics_page(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics_page)
    # Last: every other POST may be a tunnelled Handle message (routes match in order).
    app.router.add_post("/{path:.*}", tunnel)
    return app
