"""Signing in to the console: who the browser is, and the session that remembers it.

Three ways in, each checked by the code the REST door uses (same throttling of failed
tries, same audit rows):

- an administrator's handle, index and HS_SECKEY secret (the REST door's Basic check);
- an API key (the REST door's Bearer check);
- a private key file, proved in the page (static/signin.js): the browser asks
  /api/sessions for a nonce, signs nonce ‖ cnonce with the key (WebCrypto) and posts
  the signature, which the REST sessions' code verifies against the handle's HS_PUBKEY.
  The key never leaves the browser.

The console session is a random cookie value (``HttpOnly``, ``SameSite=Strict``,
``Path=/``, ``Secure`` over TLS or behind a proxy saying so) whose row lives in the
registry (registry/console_sessions.py): every worker and node sees it, idle expiry 30
minutes, absolute 12 hours. Each session has its own CSRF token; every state-changing
POST must carry it (form field ``csrf`` or header ``X-CSRF-Token``) and, when the browser
sends one, an ``Origin`` of this node. The session is bound to the browser's User-Agent
(part of the row's key): a cookie replayed from another client program with its own
User-Agent does not find its row. It is not bound to the client address: phones and
proxies change address mid-session. So a stolen cookie together with the browser's
User-Agent (no secret) is the session: the CSRF token is in every console page that
cookie can fetch. What limits a stolen cookie is its lifetime (idle 30 minutes,
absolute 12 hours), signing out, and the credential it was opened with: revoking that
API key or changing that HS_SECKEY/HS_PUBKEY value ends the session at its next request
(registry/console_sessions.py).
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import web

from idnode.registry.auth import Identity
from idnode.registry.login_guard import Throttled
from idnode.registry.sessions import SessionLimit

from ..codec.auth import AUTH_PUBKEY
from .i18n import Translator, choose

if TYPE_CHECKING:
    from idnode.registry.console_sessions import ConsoleSessionStore
    from idnode.registry.service import RegistryService

    from ..rest_door import RestApi
    from .pages import WebPages

log = logging.getLogger("idnode.console")

COOKIE = "idnode_console"
IDLE = 30 * 60.0
ABSOLUTE = 12 * 3600.0
SIGNIN = "/console/signin"
SIGNOUT = "/console/signout"
# The console's pages run their own static scripts, and the key-file sign-in asks
# /api/sessions for a nonce: 'self' for both, still nothing inline, nothing elsewhere.
CONSOLE_CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
CONSOLE_HEADERS = {"Content-Security-Policy": CONSOLE_CSP}
_USER = "idnode.console.user"


@dataclass(frozen=True)
class ConsoleUser:
    handle: str  # the admin handle, e.g. "0.NA/88.166"
    index: int  # the admin value's index, e.g. 300
    server_admin: bool  # one of --server-admins
    csrf: str  # the session's CSRF token (form field "csrf", header X-CSRF-Token)
    identity: Any  # the actor RegistryService calls take (an Identity, as REST passes)


class SignIn:
    """The sign-in state of one app: the session rows and the checks behind the page."""

    def __init__(self, pages: WebPages, rest: RestApi, registry: RegistryService) -> None:
        self.pages = pages
        self.rest = rest
        self.registry = registry
        total = rest.sessions.kept.headroom.limit if rest.sessions is not None else 100_000
        self.sessions: ConsoleSessionStore = registry.console_sessions(IDLE, ABSOLUTE, total)

    def add_routes(self, app: web.Application) -> None:
        app[STATE] = self
        app.router.add_get(SIGNIN, self.signin_page)
        app.router.add_post(SIGNIN, self.signin)
        app.router.add_post(SIGNOUT, self.signout)

    # --- pages -------------------------------------------------------------------------

    def _form(
        self, request: web.Request, *, status: int = 200, problem: str = "", **fields: str
    ) -> web.Response:
        values = {"handle": "", "index": "300", "method": "secret", **fields}
        return self.pages.page(
            request,
            "signin.html",
            status=status,
            private=True,
            headers=CONSOLE_HEADERS,
            problem=problem,
            next=safe_next(request.query.get("next", "")),
            **values,
        )

    async def signin_page(self, request: web.Request) -> web.Response:
        if await current_user(request) is not None:
            raise web.HTTPSeeOther(safe_next(request.query.get("next", "")))
        return self._form(request)

    async def signin(self, request: web.Request) -> web.Response:
        t = Translator(choose(request)[0])
        if not same_origin(request):
            raise web.HTTPForbidden(text="cross-site sign-in refused")
        form = await request.post()
        method = str(form.get("method", "secret"))
        handle = str(form.get("handle", "")).strip()
        index = str(form.get("index", "300")).strip() or "300"
        target = safe_next(str(form.get("next", "")))
        keep = {"handle": handle, "index": index, "method": method}
        client = request.remote or ""
        key = ""
        try:
            if method == "apikey":
                key = str(form.get("apikey", "")).strip()
                who = await self._header_identity(request, "Bearer", key)
            elif method == "keyfile":
                who = await self._key_answer(form, handle, index, client)
            else:
                if not (index.isascii() and index.isdigit() and handle):
                    return self._form(request, status=400, problem=t("signin_need_handle"), **keep)
                user = f"{index}%3A{quote(handle, safe='/')}"
                secret = str(form.get("secret", ""))
                token = base64.b64encode(f"{user}:{secret}".encode()).decode()
                who = await self._header_identity(request, "Basic", token)
        except Refused as exc:
            log.info("console: sign-in (%s) refused for %s: %s", method, client, exc.reason)
            return self._form(
                request,
                status=exc.status,
                problem=t("signin_failed", message=exc.reason),
                **keep,
            )
        try:
            # tied to the credential used: revoking it ends the session
            cookie, _ = await self.sessions.open(who, binding(request), api_key=key)
        except SessionLimit as exc:
            return self._form(request, status=503, problem=str(exc), **keep)
        log.info("console: %s signed in (%s) from %s", who, method, client)
        response = web.HTTPSeeOther(target)
        response.set_cookie(
            COOKIE,
            cookie,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=is_secure(request),
            max_age=int(ABSOLUTE),
        )
        raise response

    async def signout(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is not None:
            await check_csrf(request, user)
            await self.sessions.end(request.cookies.get(COOKIE, ""), binding(request))
            log.info("console: %s:%s signed out", user.index, user.handle)
        response = web.HTTPSeeOther(SIGNIN)
        response.del_cookie(COOKIE, path="/")
        raise response

    # --- the checks --------------------------------------------------------------------

    async def _header_identity(self, request: web.Request, scheme: str, token: str) -> Identity:
        """Who these credentials name, by the REST door's own Basic or Bearer check (the
        request's body is read, so it cannot be cloned with a header added)."""
        client = request.remote or ""
        check = self.rest._bearer if scheme == "Bearer" else self.rest._basic
        try:
            return await check(token, self.registry, client)
        except Throttled as exc:
            raise Refused(429, str(exc)) from None
        except web.HTTPException as exc:
            raise Refused(exc.status if exc.status in (401, 429) else 401, _reason(exc)) from None

    async def _key_answer(self, form: Any, handle: str, index: str, client: str) -> Identity:
        """The answer the page's script made to a REST session's nonce with a private key:
        checked by the REST sessions' code, then that session is ended (the console
        session replaces it; its id was seen by the script)."""
        sessions = self.rest.sessions
        session_id = str(form.get("session", ""))
        if sessions is None or not session_id:
            raise Refused(400, "no session to answer")
        session = await sessions.find(session_id)
        if session is None:
            raise Refused(401, "the sign-in took too long; try again")
        fields = {
            "id": f"{index}:{handle}",
            "type": AUTH_PUBKEY,
            "alg": str(form.get("alg", "SHA256")),
            "cnonce": str(form.get("cnonce", "")),
            "signature": str(form.get("signature", "")),
        }
        try:
            answered = await sessions.answer(session, fields, client)
        except Throttled as exc:
            raise Refused(429, str(exc)) from None
        finally:
            await sessions.end(session_id)
        if answered is None:
            raise Refused(401, "the sign-in took too long; try again")
        if answered.error or answered.identity is None:
            raise Refused(401, answered.error or "not verified")
        return answered.identity


STATE = web.AppKey("idnode_console_signin", SignIn)


class Refused(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _reason(exc: web.HTTPException) -> str:
    try:
        body = json.loads(exc.text or "{}")
    except ValueError:
        return exc.reason
    return str(body.get("message") or exc.reason)


def binding(request: web.Request) -> str:
    """What a session is bound to besides its cookie: the browser's User-Agent."""
    return request.headers.get("User-Agent", "")


def is_secure(request: web.Request) -> bool:
    """Over TLS, or behind a proxy saying so. Trusting the header can only add the
    Secure flag (the cookie is then never sent over plain HTTP), never remove it."""
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return request.secure or forwarded == "https"


def same_origin(request: web.Request) -> bool:
    """A POST's ``Origin`` (browsers send it) names this node, or is absent (an older
    browser, or a program: they must still carry the CSRF token)."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = request.headers.get("X-Forwarded-Host") or request.host
    return origin.split("://", 1)[-1].rstrip("/").lower() == host.lower()


def safe_next(target: str) -> str:
    """Where to go after signing in: a path of the console or the dashboard, never
    another site."""
    if target.startswith(("/console", "/dashboard")) and "\\" not in target:
        return target
    return "/console"


async def current_user(request: web.Request) -> ConsoleUser | None:
    """The administrator signed in to this request's console session, if any (once per
    request: a page calling this twice reads the registry once)."""
    if _USER in request:
        user: ConsoleUser | None = request[_USER]
        return user
    state = request.app.get(STATE)
    cookie = request.cookies.get(COOKIE, "")
    user = None
    if state is not None and cookie:
        session = await state.sessions.find(cookie, binding(request))
        if session is not None:
            who = session.identity
            user = ConsoleUser(
                who.handle, who.index, state.registry.is_server_admin(who), session.csrf, who
            )
    request[_USER] = user
    return user


def to_sign_in(request: web.Request) -> web.Response:
    """303 to the sign-in page, coming back here afterwards (a plain response to
    return; raise ``web.HTTPSeeOther`` yourself if you must raise)."""
    target = request.rel_url.path_qs if request.method == "GET" else request.path
    location = f"{SIGNIN}?next={quote(target, safe='')}"
    return web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})


async def check_csrf(request: web.Request, user: ConsoleUser) -> None:
    """Refuse (403) a state change without this session's CSRF token, or from a page of
    another site."""
    if not same_origin(request):
        raise web.HTTPForbidden(text="cross-site request refused")
    token = request.headers.get("X-CSRF-Token", "")
    if not token and request.content_type in (
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ):
        token = str((await request.post()).get("csrf", ""))
    if not (token and hmac.compare_digest(token.encode(), user.csrf.encode())):
        raise web.HTTPForbidden(text="missing or wrong CSRF token; reload the page")
