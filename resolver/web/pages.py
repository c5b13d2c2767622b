"""The resolution pages: what hdl.handle.net and doi.org do, served by the node.

``GET /{handle}`` redirects (302) to the handle's URL value; ``?noredirect`` shows the
record as a table; ``?index=``/``?type=`` select values (as the REST API reads them);
``?auth`` asks for an administrator's credentials (HTTP Basic, as the reference proxy
does) and shows the values only they may read; HS_ALIAS is followed up to
``ALIAS_LIMIT`` hops, a loop refused. ``Accept: application/json`` gets the REST API's
own answer (the same handler, not a copy). ``GET /`` is the search form.

Every lookup goes through the resolver core and its caches like any other door; writes
never happen here. Pages are rendered by Jinja2 (resolver/web/assets.py) in the
reader's language (resolver/web/i18n.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

from aiohttp import web
from yarl import URL

from idnode.registry.auth import Identity
from idnode.registry.names import InvalidName, check_handle
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.statistics import USAGE

from .. import metrics
from ..codec import HandleValue, ProtocolError, ResponseCode, decode_values
from ..codec.jsonform import INT32_MAX, parse_int
from ..core import Resolution, answer
from ..logs import Repeats
from ..rest_door import API, RestApi, http_status
from .assets import LANGUAGE_SEP, environment, load_static, serve_static
from .i18n import LANGUAGES, PERMISSION_WORDS, Translator, choose, remember
from .values import alias_target, data_view, redirect_url, row

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from ..core import Resolver
    from ..l1 import Entry

RC = ResponseCode
log = logging.getLogger("idnode.web")
_down = Repeats(log)

# HS_ALIAS hops followed before the page gives up (the reference resolver's bound is of
# this order; a chain longer than this is a mistake, not a design).
ALIAS_LIMIT = 5
# First path segments that are the node's other resources, never a handle's prefix.
RESERVED = frozenset(
    {
        "api",
        "static",
        "healthz",
        "metrics",
        "openapi.json",
        "identity",
        "identityv2",
        "snms",
        "hrls",
        "favicon.ico",
        "robots.txt",
    }
)
LANGUAGE_NAMES = {"zh-CN": "中文", "en": "English"}
# The pages load nothing from elsewhere; a value's data can never become a script. (No
# form-action: Chrome applies it to the redirects after a submit, and the search form's
# answer is a redirect to wherever the handle points.)
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}
AUTH_CHALLENGE = 'Basic realm="idnode", charset="UTF-8"'

# The hook for "search by value" (the search API fills it): a query in, handles out.
ValueSearch = Callable[[str, int], Awaitable[list[str]]]
SEARCH_LIMIT = 50


def wants_json(request: web.Request) -> bool:
    """Content negotiation: JSON when the client names application/json above HTML (an
    explicitly named type beats a wildcard of the same weight)."""
    json_q = html_q = wild_q = 0.0
    for part in request.headers.get("Accept", "").split(","):
        media, *params = (p.strip() for p in part.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                try:
                    q = float(p[2:])
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media == "application/json":
            json_q = max(json_q, q)
        elif media in ("text/html", "application/xhtml+xml"):
            html_q = max(html_q, q)
        elif media in ("*/*", "text/*"):
            wild_q = max(wild_q, q)
    return json_q > 0 and json_q > html_q and json_q >= wild_q


def handle_url(handle: str, *, noredirect: bool = False, **query: str) -> str:
    """The page of a handle: its '/' kept (the address reads as the handle does)."""
    url = "/" + quote(handle, safe="/:@!$&'()*+,;=-._~")
    args = (["noredirect"] if noredirect else []) + [
        f"{k}={quote(v, safe='')}" for k, v in query.items()
    ]
    return url + ("?" + "&".join(args) if args else "")


def parse_handle(raw: str) -> str:
    """The handle of a page's path. An encoded '/' is accepted (a handle has one '/'
    meaning, either way); bytes that are not UTF-8 and '.'/'..' parts are refused."""
    try:
        handle = unquote(raw, errors="strict")
        handle.encode("utf-8")
    except UnicodeError:
        raise InvalidName("the handle in the path is not UTF-8") from None
    if any(part in (".", "..") for part in handle.split("/")):
        raise InvalidName("'.' and '..' are not handle parts")
    check_handle(handle)
    return handle


def browser_basic(header: str) -> str:
    """A browser's Basic credentials in the REST API's form. A person types the user
    name as ``300:0.NA/88.166`` (the REST API wants the ':' encoded, ``300%3A...``):
    digits and a ':' first mean an index and a handle, up to the next ':'."""
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return header
    try:
        text = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return header  # the REST API refuses it with its own message
    index, colon, rest = text.partition(":")
    if not (colon and index.isascii() and index.isdigit() and ":" in rest):
        return header
    handle, _, secret = rest.partition(":")
    user = f"{index}%3A{quote(handle, safe='/')}"
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


class AliasProblem(Exception):
    def __init__(self, kind: str, chain: list[str]) -> None:
        super().__init__(kind)
        self.kind = kind  # "loop" or "depth"
        self.chain = chain


class WebPages:
    """The node's web face. ``add_routes`` must come after every other GET route of the
    app: ``GET /{handle}`` takes every path no earlier route claimed."""

    def __init__(
        self,
        core: Resolver,
        registry: RegistryService | None,
        rest: RestApi,
        *,
        search: ValueSearch | None = None,
    ) -> None:
        self.core = core
        self.registry = registry
        self.rest = rest
        self.search = search
        self.env = environment()
        self.static = load_static()
        self.env.globals.update(
            static_url=self.static_url,
            # every page links these two: items of a dict, not a call per render
            static_urls={name: self.static_url(name) for name in self.static},
            handle_url=handle_url,
        )

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.home)
        app.router.add_get("/static/{name}", self.static_file)
        # [\s\S]: a path with an encoded newline is still a (refused) handle, not a 405.
        app.router.add_get(r"/{path:[\s\S]+}", self.handle_page)

    def static_url(self, name: str) -> str:
        return f"/static/{name}?v={self.static[name].etag.strip(chr(34))}"

    # --- rendering ---------------------------------------------------------------------

    def page(
        self,
        request: web.Request,
        template: str,
        *,
        status: int = 200,
        private: bool = False,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> web.Response:
        lang, chosen = choose(request)
        t = Translator(lang)
        # The other languages' addresses (the page shows its own as plain text).
        links = [
            (code, LANGUAGE_NAMES[code], str(request.rel_url.update_query(lang=code)))
            if code != lang
            else (code, LANGUAGE_NAMES[code], "")
            for code in LANGUAGES
        ]
        # The template compiled in the reader's language (its constant words in it).
        compiled = self.env.get_template(f"{lang}{LANGUAGE_SEP}{template}")
        html = compiled.render(
            t=t, lang=lang, lang_links=links, perm_words=PERMISSION_WORDS[lang], **context
        )
        response = web.Response(
            text=html,
            status=status,
            content_type="text/html",
            charset="utf-8",
            headers={
                **SECURITY_HEADERS,
                # An answer may change with the next write: revalidate, never keep a
                # page that named values only an administrator may read.
                "Cache-Control": "private, no-store" if private else "no-cache",
                "Vary": "Accept, Authorization, Cookie",
                **(headers or {}),
            },
        )
        if chosen:
            remember(response, request, lang)
        return response

    def message(
        self,
        request: web.Request,
        status: int,
        title: str,
        text: str = "",
        *,
        handle: str = "",
        detail: str = "",
        fields: dict[str, object] | None = None,
        referral: str = "",
        servers: list[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        """A page that is an answer without a record: not found, not here, an error.
        ``title`` and ``text`` are catalogue keys; ``text`` is formatted with the handle
        and ``fields``."""
        t = Translator(choose(request)[0])
        return self.page(
            request,
            "message.html",
            status=status,
            headers=headers,
            title=t(title),
            text=t(text, handle=handle, **(fields or {})) if text else "",
            handle=handle,
            detail=detail,
            referral=referral,
            servers=servers or [],
        )

    # --- routes ------------------------------------------------------------------------

    async def static_file(self, request: web.Request) -> web.Response:
        return serve_static(self.static, request)

    async def home(self, request: web.Request) -> web.Response:
        query = request.query.get("q", "").strip()
        noredirect = "noredirect" in request.query
        by_value = request.query.get("mode") == "value" and self.search is not None
        context: dict[str, Any] = {
            "query": query,
            "noredirect": noredirect,
            "by_value": by_value,
            "search_enabled": self.search is not None,
            "results": None,
            "problem": "",
        }
        if "q" in request.query and not query:
            context["problem"] = Translator(choose(request)[0])("search_empty")
        elif query and by_value and self.search is not None:
            context["results"] = await self.search(query, SEARCH_LIMIT)
        elif query:  # a handle typed in: its page (the form needs no script for this)
            raise web.HTTPSeeOther(handle_url(query, noredirect=noredirect))
        return self.page(request, "home.html", **context)

    async def handle_page(self, request: web.Request) -> web.StreamResponse:
        raw = request.raw_path.split("?", 1)[0][1:]
        if raw.split("/", 1)[0].lower() in RESERVED:
            return web.Response(
                status=404,
                text=json.dumps({"error": f"no such resource: GET {request.path}"}),
                content_type="application/json",
            )
        if wants_json(request):
            # The REST API's own handler and JSON: one rendering, one set of rules.
            qs = request.query_string
            url = URL(
                f"{API}/{raw}" + (f"?{request.raw_path.split('?', 1)[1]}" if qs else ""),
                encoded=True,
            )
            return await self.rest.get(request.clone(rel_url=url))
        try:
            handle = parse_handle(raw)
        except InvalidName as exc:
            return self.message(request, 400, "invalid_title", detail=str(exc))
        q = parse_qs(request.query_string, keep_blank_values=True)
        try:
            indexes = tuple(parse_int(v, "index", 0, INT32_MAX) for v in q.get("index", []))
        except ProtocolError as exc:
            return self.message(request, 400, "error_title", handle=handle, detail=exc.reason)
        types = tuple(q.get("type", []))
        who: Identity | None = None
        if "auth" in q:
            got = await self._who(request)
            if not isinstance(got, Identity):
                return got
            who = got
        try:
            return await self._resolve(request, handle, indexes, types, who, "noredirect" in q)
        except AliasProblem as exc:
            chain = " → ".join(exc.chain)
            if exc.kind == "loop":
                return self.message(
                    request, 508, "alias_loop_title", "alias_loop_text", fields={"chain": chain}
                )
            return self.message(
                request,
                508,
                "alias_depth_title",
                "alias_depth_text",
                fields={"chain": chain, "n": ALIAS_LIMIT},
            )
        except Exception as exc:
            if not registry_unavailable(exc):
                raise
            _down.warning("GET %s: registry unavailable (%s)", request.path, exc)
            return self.message(
                request,
                503,
                "unavailable_title",
                "unavailable_text",
                handle=handle,
                headers={"Retry-After": "1"},
            )

    # --- resolution --------------------------------------------------------------------

    async def _who(self, request: web.Request) -> Identity | web.Response:
        """``?auth``: the administrator of the request's Basic credentials (checked by
        the REST API's code: same throttling, audit and cache), or the page asking."""
        header = request.headers.get("Authorization", "")
        if header:
            clone = request.clone(
                headers={**request.headers, "Authorization": browser_basic(header)}
            )
            try:
                who = await self.rest.identity(clone)
            except web.HTTPException as exc:
                reason = _reason(exc)
                log.info("web: ?auth refused for %s: %s", request.remote, reason)
                t = Translator(choose(request)[0])
                status = exc.status if exc.status in (401, 429) else 401
                return self.message(
                    request,
                    status,
                    "auth_title",
                    "auth_text",
                    detail=t("auth_failed", message=reason),
                    headers={"WWW-Authenticate": AUTH_CHALLENGE},
                )
            if who is not None:
                return who
        return self.message(
            request, 401, "auth_title", "auth_text", headers={"WWW-Authenticate": AUTH_CHALLENGE}
        )

    async def _visible(self, handle: str, who: Identity | None) -> tuple[Entry | Resolution, bool]:
        """The core's entry for ``handle`` and whether ``who`` may read its restricted
        values (the REST API's rule)."""
        e = await self.core.entry(handle)
        if isinstance(e, Resolution):
            return e, False
        authorized = (
            who is not None
            and e.values_wire is not None
            and self.registry is not None
            and await self.registry.may_read_restricted(handle, e.values_wire, who)
        )
        return e, authorized

    async def _resolve(
        self,
        request: web.Request,
        asked: str,
        indexes: tuple[int, ...],
        types: tuple[str, ...],
        who: Identity | None,
        noredirect: bool,
    ) -> web.StreamResponse:
        chain = [asked]
        values: list[HandleValue] | None = None  # res's values, decoded
        while True:
            handle = chain[-1]
            e, authorized = await self._visible(handle, who)
            if isinstance(e, Resolution):
                res = e
                break
            whole = answer(e, (), (), authorized=authorized)
            every = (
                list(decode_values(whole.values_wire)) if whole.response_code == RC.SUCCESS else []
            )
            target = alias_target(every)
            if target is None:
                if indexes or types:
                    res = answer(e, indexes, types, authorized=authorized)
                else:  # the answer already decoded: not decoded again to show it
                    res, values = whole, every
                break
            seen = {h.casefold() for h in chain}
            if target.casefold() in seen:
                raise AliasProblem("loop", [*chain, target])
            if len(chain) > ALIAS_LIMIT:
                raise AliasProblem("depth", [*chain, target])
            chain.append(target)
        metrics.TALLY.request("web", 1, res.response_code)
        USAGE.resolved(asked, res.response_code)  # per-prefix statistics, as REST counts
        return self._answer(request, chain, res, indexes, types, who, noredirect, values)

    def _answer(
        self,
        request: web.Request,
        chain: list[str],
        res: Resolution,
        indexes: tuple[int, ...],
        types: tuple[str, ...],
        who: Identity | None,
        noredirect: bool,
        decoded: list[HandleValue] | None = None,  # res's values, when already decoded
    ) -> web.StreamResponse:
        handle = chain[-1]
        rc = res.response_code
        if rc in (RC.SUCCESS, RC.VALUES_NOT_FOUND):
            if decoded is not None:
                values = decoded
            else:
                values = list(decode_values(res.values_wire)) if rc == RC.SUCCESS else []
            url = redirect_url(values)
            if url is not None and not noredirect and who is None:
                raise web.HTTPFound(url, headers={"Cache-Control": "no-cache", "Vary": "Accept"})
            filtered = ", ".join([*(str(i) for i in indexes), *types])
            return self.page(
                request,
                "record.html",
                private=who is not None,
                handle=chain[0],
                chain=chain,
                rows=[row(v) for v in sorted(values, key=lambda v: v.index)],
                who=str(who) if who is not None else "",
                filtered=filtered,
                json_url=f"{API}/{quote(handle, safe='/')}",
                auth_url=handle_url(chain[0], noredirect=True) + "&auth",
            )
        if rc == RC.HANDLE_NOT_FOUND:
            return self.message(request, 404, "not_found_title", "not_found_text", handle=handle)
        if res.referral:  # served by another node: where to ask, and its servers
            servers = [
                s for v in decode_values(res.values_wire) for s in data_view(v.type, v.data).servers
            ]
            return self.message(
                request,
                300,  # the reference proxy's status for a referral, as the REST API
                "not_homed_title",
                "not_homed_text",
                handle=handle,
                detail=res.message,
                referral=res.referral,
                servers=servers,
            )
        if rc == RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE:
            return self.message(
                request, 400, "not_homed_title", "not_homed_text", handle=handle, detail=res.message
            )
        return self.message(
            request, http_status(rc), "error_title", handle=handle, detail=res.message
        )


def _reason(exc: web.HTTPException) -> str:
    try:
        body = json.loads(exc.text or "{}")
    except ValueError:
        return exc.reason
    return str(body.get("message") or exc.reason)
