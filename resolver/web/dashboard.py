"""The operator dashboard: the node's health, traffic, caches, latency, per-prefix
statistics, pending prefix applications and quotas, for server administrators.

    GET  /dashboard                                  the page (console sign-in)
    GET  /dashboard/charts/{registrations|resolutions}.svg   the per-prefix charts
    POST /dashboard/applications/{id}/{approve|reject}       a decision (form + CSRF)
    GET  /api/dashboard                              the same data as JSON (console
                                                     session, or the REST API's
                                                     credentials of a server admin)

The page is rendered whole by the server (it works without JavaScript); static
``dashboard.js`` then refreshes it every ``REFRESH`` seconds from ``/api/dashboard``.
Numbers are the whole node's: they are read from the metrics ``/metrics`` serves (summed
over workers, dashboard_metrics.py). Decisions on applications call the registry's
``applications.approve``/``reject``, as ``/api/prefix-applications/{id}/approve|reject``
does, with the same audit rows and refusals.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from idnode.errors import RequestRefused
from idnode.registry.prefix_applications import application_json
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.statistics import utc_day

from ..codec import ResponseCode
from ..rest_door import reply
from . import dashboard_charts as charts
from .dashboard_health import as_json as health_json
from .dashboard_health import node_health
from .dashboard_metrics import WINDOW, Readings, traffic
from .i18n import Translator, choose
from .signin import CONSOLE_HEADERS, ConsoleUser, check_csrf, current_user, to_sign_in

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from ..health import HealthCheck
    from ..rest_door import RestApi
    from .pages import WebPages

RC = ResponseCode
log = logging.getLogger("idnode.dashboard")

DASHBOARD = "/dashboard"
API_DASHBOARD = "/api/dashboard"
# The charts' URL changes this often, so a browser's copy is fetched again (counts are
# flushed every --statistics-flush seconds, 10 by default).
CHART_VERSION_SECONDS = 10
REFRESH = 5  # seconds between the page's refreshes
QUOTA_ROWS = 50  # prefixes whose quota is shown
PENDING_ROWS = 50  # pending applications shown (the oldest waiting are at the end)
# What dashboard.js writes when it redraws a table (the page hands them over in its
# language, as a JSON data block: the script has no catalogue of its own).
SCRIPT_WORDS = (
    "dash_updated",
    "dash_rate_window",
    "dash_rate_pending",
    "dash_no_requests",
    "dash_no_applications",
    "dash_no_quotas",
    "dash_approve",
    "dash_reject",
    "dash_app_reason",
)
# The dashboard page runs dashboard.js, which fetches /api/dashboard: the console's CSP.
HEADERS = CONSOLE_HEADERS


def _state_words() -> list[str]:
    kinds = ("registry", "redis", "replica", "enterprise", "upstream")
    states = ("ok", "degraded", "down", "off")
    return [f"dash_kind.{k}" for k in kinds] + [f"dash_state.{s}" for s in states]


class Dashboard:
    def __init__(
        self,
        pages: WebPages,
        rest: RestApi,
        health: HealthCheck,
    ) -> None:
        self.pages = pages
        self.rest = rest
        self.registry: RegistryService | None = pages.registry
        self.health = health
        self.readings = Readings()

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(DASHBOARD, self.page)
        app.router.add_get(DASHBOARD + "/charts/{what}.svg", self.chart)
        app.router.add_post(DASHBOARD + "/applications/{id}/{decision}", self.decide)
        app.router.add_get(API_DASHBOARD, self.api)

    # --- who may look ------------------------------------------------------------------

    async def _operator(self, request: web.Request) -> ConsoleUser | web.Response:
        """The signed-in server administrator, or the answer for anyone else: the
        sign-in page for nobody, 403 for an administrator who is not a server admin."""
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        if not user.server_admin:
            log.info(
                "dashboard refused to %s:%s (not a server administrator)", user.index, user.handle
            )
            return self.pages.message(request, 403, "dash_forbidden_title", "dash_forbidden_text")
        return user

    async def _api_identity(self, request: web.Request) -> Any | web.Response:
        """The console session's administrator, else the REST API's credentials (Basic,
        Bearer API key, REST session): 401 without, 403 unless a server admin."""
        user = await current_user(request)
        who = user.identity if user is not None else await self.rest.need_identity(request)
        if self.registry is None or not self.registry.is_server_admin(who):
            return reply(
                RC.INSUFFICIENT_PERMISSIONS,
                status=403,
                message=f"{who} is not a server administrator",
            )
        return who

    # --- the data ----------------------------------------------------------------------

    async def data(self, who: Any) -> dict[str, Any]:
        """Everything the page shows, as /api/dashboard answers it."""
        now, base = self.readings.take()
        out: dict[str, Any] = {
            "generatedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "refreshSeconds": REFRESH,
            "health": health_json(await node_health(self.health, now)),
            "traffic": traffic(now, base),
            "l1Entries": int(now.single.get("idnode_l1_entries", 0.0)),
            "statistics": await self._statistics(who),
            "applications": await self._pending(who),
            "quotas": await self._quotas(),
        }
        return out

    async def _statistics(self, who: Any) -> dict[str, Any]:
        days = charts.days_until(utc_day())
        rows = []
        error = ""
        if self.registry is not None:
            try:
                rows = await self.registry.statistics.local(who, None, days[0], days[-1])
            except RequestRefused as exc:
                error = exc.message
            except Exception as exc:
                if not registry_unavailable(exc):
                    raise
                error = f"registry unavailable: {exc}"
        return {
            "days": days,
            "registrations": charts.series(rows, days, "registrations"),
            "resolutions": charts.series(rows, days, "resolutions"),
            "today": {
                "registrations": sum(r.registrations for r in rows if r.day == days[-1]),
                "resolutions": sum(r.resolutions for r in rows if r.day == days[-1]),
            },
            "error": error,
        }

    async def _pending(self, who: Any) -> dict[str, Any]:
        if self.registry is None:
            return {"pending": [], "error": "no registry"}
        try:
            rows = await self.registry.applications.applications(who, "pending", limit=PENDING_ROWS)
        except RequestRefused as exc:
            return {"pending": [], "error": exc.message}
        except Exception as exc:
            if not registry_unavailable(exc):
                raise
            return {"pending": [], "error": f"registry unavailable: {exc}"}
        return {"pending": [application_json(r) for r in rows], "error": ""}

    async def _quotas(self) -> dict[str, Any]:
        """Each quota'd prefix's limit and registrations (overrides first, then the homed
        prefixes the default applies to). Registrations are the quota's own counter
        (Redis's shared one, else this worker's), never counted here: a prefix may hold
        hundreds of millions of handles. None ("—") until the quota has counted it."""
        quotas = self.registry.quotas if self.registry is not None else None
        if quotas is None or self.registry is None:
            return {"enabled": False, "prefixes": []}
        named = list(quotas.overrides)
        if quotas.default > 0:
            named += sorted(p.upper() for p in self.registry.authority.homed)
        prefixes = list(dict.fromkeys(named))[:QUOTA_ROWS]
        out = []
        for prefix in prefixes:
            limit = quotas.limit(prefix)
            used = await quotas.used(prefix)
            out.append(
                {
                    "prefix": prefix,
                    "limit": limit,
                    "used": used,
                    "left": None if used is None or limit <= 0 else max(0, limit - used),
                }
            )
        return {
            "enabled": True,
            "default": quotas.default,
            "shared": quotas.shared is not None,
            "prefixes": out,
            "truncated": len(dict.fromkeys(named)) > QUOTA_ROWS,
        }

    # --- routes ------------------------------------------------------------------------

    async def page(self, request: web.Request) -> web.Response:
        got = await self._operator(request)
        if isinstance(got, web.Response):
            return got
        return await self._render(request, got)

    async def _render(
        self,
        request: web.Request,
        got: ConsoleUser,
        *,
        notice: str = "",
        problem: str = "",
        status: int = 200,
    ) -> web.Response:
        """The page, with a decision's outcome when it answers one. Outcomes are only
        ever shown in the answer to the POST that made them, never read from the URL: a
        link someone sends cannot make the dashboard announce what did not happen."""
        t = Translator(choose(request)[0])
        data = await self.data(got.identity)
        return self.pages.page(
            request,
            "dashboard.html",
            status=status,
            private=True,
            headers=HEADERS,
            user=got,
            d=data,
            window=int(WINDOW),
            notice=notice,
            problem=problem,
            chart_version=int(time.time() // CHART_VERSION_SECONDS),
            words={k: t(k) for k in SCRIPT_WORDS} | {k: t(k) for k in _state_words()},
        )

    async def chart(self, request: web.Request) -> web.Response:
        got = await self._operator(request)
        if isinstance(got, web.Response):
            return got
        what = request.match_info["what"]
        if what not in ("registrations", "resolutions"):
            raise web.HTTPNotFound(text="no such chart")
        t = Translator(choose(request)[0])
        stats = await self._statistics(got.identity)
        svg = charts.line_chart(
            t(f"dash_chart_{what}"), stats["days"], stats[what], t("dash_chart_empty")
        )
        return web.Response(
            text=svg,
            content_type="image/svg+xml",
            charset="utf-8",
            headers={
                "Cache-Control": "private, no-store",
                "Content-Security-Policy": "default-src 'none'",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def decide(self, request: web.Request) -> web.Response:
        got = await self._operator(request)
        if isinstance(got, web.Response):
            return got
        await check_csrf(request, got)
        decision = request.match_info["decision"]
        raw_id = request.match_info["id"]
        if decision not in ("approve", "reject") or not (raw_id.isascii() and raw_id.isdigit()):
            raise web.HTTPNotFound(text="no such action")
        form = await request.post()
        reason = str(form.get("reason", "")).strip()
        t = Translator(choose(request)[0])
        assert self.registry is not None  # the operator was checked against it
        apps = self.registry.applications
        try:
            if decision == "approve":
                row = await apps.approve(got.identity, int(raw_id), reason)
            else:
                row = await apps.reject(got.identity, int(raw_id), reason)
        except RequestRefused as exc:
            log.info("dashboard: %s of application %s refused: %s", decision, raw_id, exc.message)
            return await self._render(
                request, got, problem=t("dash_decide_failed", message=exc.message), status=409
            )
        log.info(
            "dashboard: application %s (%s) %s by %s", row.id, row.prefix, row.status, got.identity
        )
        # The outcome in this answer itself (no redirect carrying it in the query text).
        done = row.status if row.status in ("approved", "rejected") else "approved"
        notice = t(f"dash_decided.{done}", id=str(row.id), prefix=row.prefix)
        return await self._render(request, got, notice=notice)

    async def api(self, request: web.Request) -> web.Response:
        who = await self._api_identity(request)
        if isinstance(who, web.Response):
            return who
        response = reply(RC.SUCCESS, dashboard=await self.data(who))
        response.headers["Cache-Control"] = "private, no-store"
        return response
