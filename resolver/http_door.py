"""HTTP front door: the native Handle tunnel, the REST API (rest_door.py), the web
pages (web/: ``GET /`` and ``GET /{handle}``), /healthz and /metrics.

The tunnel takes a Handle message POSTed with Content-Type application/x-hdl-message
to any path the other routes do not claim: the reference Java library posts to the
handle's own path (``POST /20.500.12345%2Fabc``, ``POST /%2F`` for site info).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from aiohttp import ClientPayloadError, web
from aiohttp.web_protocol import RequestHandler

from . import metrics
from .codec.codes import ENVELOPE_SIZE, MAX_MESSAGE_LENGTH
from .connlimits import ByteBudget, ConnectionLimits, LimitLog
from .handle_service import HandleService
from .idis_door import IdisApi
from .rest_api_keys_door import ApiKeysApi
from .rest_audit_door import AuditApi
from .rest_batches_door import BatchesApi
from .rest_door import MAX_BODY, RestApi
from .rest_search_door import SearchApi
from .rest_templates_door import TemplatesApi
from .web import WebPages
from .web.console import Console
from .web.console_tools import add_tool_routes
from .web.dashboard import Dashboard

if TYPE_CHECKING:
    from .health import HealthCheck

log = logging.getLogger("idnode.http")

HDL_MESSAGE = "application/x-hdl-message"
# The larger of a Handle message and a REST body (the REST door checks its own limit).
MAX_REQUEST_BODY = max(MAX_MESSAGE_LENGTH + ENVELOPE_SIZE, MAX_BODY)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _json_error(status: int, message: str, **headers: str) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )


class GuardedHttp(asyncio.Protocol):
    """aiohttp's connection handler behind the per-client and per-worker connection caps:
    a connection over a cap is closed before aiohttp sees it (and counted in the log).

    And behind a send timeout: when the answers queued for a client pass the transport's
    high-water mark (it pauses writing: the client does not read them), the connection
    is aborted unless they drain below the low-water mark within ``send_timeout``
    seconds. aiohttp waits for the drain without a deadline, so a client that asks and
    never reads would otherwise keep its answer and its handler for ever."""

    def __init__(
        self, server: web.Server, limits: ConnectionLimits, send_timeout: float = 30.0
    ) -> None:
        self.server = server
        self.limits = limits
        self.send_timeout = send_timeout
        self.inner: RequestHandler | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.stalled: asyncio.TimerHandle | None = None
        self.client = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        if not self.limits.admit(self.client, "http"):
            transport.close()
            return
        self.transport = transport
        self.inner = self.server()
        self.inner.connection_made(transport)

    def _unread(self) -> None:
        """The answers queued stayed over the high-water mark for send_timeout: abort."""
        self.stalled = None
        # (uvloop's transports are no asyncio.WriteTransport to isinstance: a cast)
        t = cast(asyncio.Transport | None, self.transport)
        if t is None or t.is_closing():
            return
        self.limits.report.bite(
            f"http: answers not read within {self.send_timeout:g} s", self.client
        )
        t.abort()

    def data_received(self, data: bytes) -> None:
        if self.inner is not None:
            self.inner.data_received(data)

    def eof_received(self) -> None:
        if self.inner is not None:
            self.inner.eof_received()

    def pause_writing(self) -> None:
        if self.inner is not None:
            if self.stalled is None and self.send_timeout > 0:
                loop = asyncio.get_running_loop()
                self.stalled = loop.call_later(self.send_timeout, self._unread)
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        if self.inner is not None:
            self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.stalled is not None:
            self.stalled.cancel()
            self.stalled = None
        self.transport = None
        if self.inner is not None:
            self.limits.release(self.client)
            self.inner.connection_lost(exc)
            self.inner = None


def body_guard(budget: ByteBudget, timeout: float, report: LimitLog) -> Any:
    """A middleware reading every request body before its handler does: within the
    worker's budget of bodies in flight (503 past it), within ``timeout`` (408), and a
    client that hangs up mid-body is not an error. aiohttp keeps the bytes read, so the
    handlers' read() and json() find them."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.body_exists:
            return await handler(request)
        length = request.content_length
        if length is not None and length > MAX_REQUEST_BODY:
            return await handler(request)  # refused on its length, without reading it
        size = MAX_REQUEST_BODY if length is None else length
        client = request.remote or ""
        if not budget.take(size):  # small bodies have room large ones cannot take
            report.bite(f"http: {budget.limit >> 20} MiB of request bodies in flight", client)
            return _json_error(
                503, "too many requests being received; retry", **{"Retry-After": "1"}
            )
        try:
            try:
                await asyncio.wait_for(request.read(), timeout)
            except TimeoutError:
                report.bite(f"http: a request body not received within {timeout:g} s", client)
                response = _json_error(408, f"the request body did not arrive within {timeout:g} s")
                response.force_close()
                return response
            except (ConnectionError, ClientPayloadError) as exc:
                # The client went away or broke off its body: nothing to answer, no traceback.
                log.debug("http: %s broke off a request body: %s", client, exc)
                response = _json_error(400, "the request body was broken off")
                response.force_close()
                return response
        finally:
            budget.give(size)
        return await handler(request)

    return guard


def build_app(
    service: HandleService,
    health: HealthCheck,
    *,
    bodies: ByteBudget | None = None,
    body_timeout: float = 30.0,
    report: LimitLog | None = None,
) -> web.Application:
    guard = body_guard(bodies or ByteBudget(64 * 1024 * 1024), body_timeout, report or LimitLog())
    app = web.Application(client_max_size=MAX_REQUEST_BODY, middlewares=[guard])
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
    SearchApi(rest).add_routes(app)  # reverse lookup, /hrls/handles (--search-index)
    AuditApi(rest).add_routes(app)  # a handle's audit history, /api/audit/{handle}
    BatchesApi(rest).add_routes(app)  # uploads in the background, /api/batches
    ApiKeysApi(rest).add_routes(app)  # /api/api-keys
    TemplatesApi(rest).add_routes(app)  # /api/templates/{prefix}
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
    pages = WebPages(service.core, service.registry, rest)
    if service.registry is not None:  # the console: sign-in, identifiers, history
        Console(pages, rest, service.registry).add_routes(app)
        add_tool_routes(app, pages, rest, service.registry)  # uploads, keys, templates
        Dashboard(pages, rest, health).add_routes(app)  # operators: /dashboard
    # After every other GET: GET /{handle} takes each path no earlier route claimed.
    pages.add_routes(app)
    # Last: every other POST may be a tunnelled Handle message (routes match in order).
    app.router.add_post("/{path:.*}", tunnel)
    return app
