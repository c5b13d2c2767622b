"""The enterprise console: what a signed-in administrator sees and does.

- ``/console`` — the prefixes the administrator holds, and a search box (by handle; by
  value when the node has ``--search-index``);
- ``/console/prefixes/{prefix}`` — the identifiers under a prefix, a page of 50 at a
  time by key range (``?after=<last handle>``; never counted, never loaded whole);
- ``/console/handles/{handle}`` — create, edit or delete an identifier through a form
  made from the prefix's metadata template (console_forms.py), errors per field;
- ``/console/handles/{handle}/history`` — the handle's audit history.

Sign-in and the session are signin.py's. Every write goes through the registry service
as the REST API's do (same permissions, audit, invalidation), and each action exists in
the REST API too (PUT/DELETE /api/handles, GET /api/audit/{handle}).
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from aiohttp import web

from idnode.registry.auth import Identity
from idnode.registry.names import InvalidName, check_handle, normalize, prefix_of
from idnode.registry.service import OUTCOME_UNKNOWN, outcome_unknown
from idnode.registry.service import unavailable as registry_unavailable
from idnode.registry.value_search import SearchRefused, SearchUnavailable, Term

from ..codec import AdminPermission, HandleValue, ResponseCode, decode_values, encode_values
from ..codec.codes import rc_name
from ..core import Resolution
from . import console_forms
from .console_tools import ToolPage
from .i18n import Translator, choose
from .signin import ConsoleUser, SignIn, check_csrf, current_user, to_sign_in

if TYPE_CHECKING:
    from idnode.registry.service import RegistryService

    from ..rest_door import RestApi
    from .pages import WebPages

log = logging.getLogger("idnode.console")

RC = ResponseCode
PAGE_SIZE = 50
HANDLES = "/console/handles/"
HISTORY = "/history"
HISTORY_ROWS = 200
SEARCH_LIMIT = 50


class Console(ToolPage):
    """The console's routes; ``add_routes`` must come before ``WebPages.add_routes``
    (its ``GET /{handle}`` takes every path no earlier route claims)."""

    def __init__(self, pages: WebPages, rest: RestApi, registry: RegistryService) -> None:
        super().__init__(pages, rest, registry)
        self.signin = SignIn(pages, rest, registry)

    def add_routes(self, app: web.Application) -> None:
        self.signin.add_routes(app)
        app.router.add_get("/console", self.home)
        app.router.add_get("/console/search", self.search)
        app.router.add_get("/console/new", self.new)
        app.router.add_get("/console/prefixes/{prefix}", self.prefix_page)
        app.router.add_get(HANDLES + r"{tail:[\s\S]+}", self.handle_get)
        app.router.add_post(HANDLES + r"{tail:[\s\S]+}", self.handle_post)

    def page_context(self, request: web.Request) -> dict[str, Any]:
        """The identifier pages link handles through ``handle_path``."""
        return {"handle_path": handle_path}

    async def held_prefixes(self, who: Identity) -> list[str]:
        """The homed prefixes whose admins grant ``who`` creating or listing handles
        (a server administrator holds them all)."""
        homed = sorted(self.registry.authority.homed)
        if self.registry.is_server_admin(who):
            return homed
        permissions = self.registry.permissions
        # Every prefix's admins in one read, their groups in one more (per level): a
        # node homing many prefixes costs a page view no read per prefix.
        by_prefix = await permissions.admins_by_prefix([p + "/" for p in homed], who)
        admins_of = {
            p: by_prefix.get(normalize(p, self.registry.case_sensitive), []) for p in homed
        }
        groups = await permissions.load_groups([a for ads in admins_of.values() for a in ads])
        return [
            prefix
            for prefix in homed
            if any(
                permissions.granted(who, admins_of[prefix], int(p), groups)
                for p in (AdminPermission.ADD_HANDLE, AdminPermission.LIST_HANDLES)
            )
        ]

    async def home(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        prefixes = await self.held_prefixes(user.identity)
        return self.render(
            request,
            "console_home.html",
            user,
            prefixes=prefixes,
            search_values=self.registry.search.enabled,
        )

    # --- search ------------------------------------------------------------------------

    async def search(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        query = request.query.get("q", "").strip()
        t = Translator(choose(request)[0])
        if not query:
            raise web.HTTPSeeOther("/console")
        if request.query.get("mode") != "value" or not self.registry.search.enabled:
            raise web.HTTPSeeOther(handle_path(query))
        problem, results = "", []
        kind, eq, pattern = query.partition("=")
        try:
            if not eq:
                raise SearchRefused(t("console_search_terms"))
            hits = await self.registry.search.find(
                [Term.parse(kind, pattern)], user.identity, limit=SEARCH_LIMIT
            )
            results = [h.handle for h in hits or []]
        except (SearchRefused, SearchUnavailable) as exc:
            problem = t("console_search_failed", message=str(exc))
        return self.render(
            request,
            "console_search.html",
            user,
            query=query,
            results=results,
            problem=problem,
        )

    # --- a prefix's identifiers ----------------------------------------------------------

    async def prefix_page(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        prefix = request.match_info["prefix"]
        after = request.query.get("after", "")
        listing = await self.registry.list_handles(
            "0.NA/" + prefix, user.identity, after=after, limit=PAGE_SIZE + 1
        )
        if not listing.ok:
            return self.problem(request, user, 403, listing.message)
        handles = list(listing.handles)
        more = len(handles) > PAGE_SIZE
        handles = handles[:PAGE_SIZE]
        next_url = (
            f"/console/prefixes/{quote(prefix)}?after={quote(handles[-1], safe='')}" if more else ""
        )
        return self.render(
            request,
            "console_prefix.html",
            user,
            prefix=prefix,
            handles=handles,
            after=after,
            next_url=next_url,
        )

    async def new(self, request: web.Request) -> web.Response:
        """The prefix page's "new identifier" box: to the form of that handle."""
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        prefix = request.query.get("prefix", "").strip()
        suffix = request.query.get("suffix", "").strip()
        raise web.HTTPSeeOther(handle_path(f"{prefix}/{suffix}") + "?new")

    # --- one identifier --------------------------------------------------------------------

    async def handle_get(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        try:
            handle, history = parse_tail(request)
        except InvalidName as exc:
            return self.problem(request, user, 400, str(exc))
        if history:
            return await self.history(request, user, handle)
        values, _ = await self.readable_values(handle, user)
        if "delete" in request.query and values is not None:
            return self.render(request, "console_delete.html", user, handle=handle)
        templates = await self.registry.templates.for_handle(handle)
        template = console_forms.current_template(values or [], templates)
        form = console_forms.build(template, values or [])
        return self.form_page(
            request, user, handle, form, exists=values is not None, seen=digest(values)
        )

    async def handle_post(self, request: web.Request) -> web.Response:
        user = await current_user(request)
        if user is None:
            return to_sign_in(request)
        await check_csrf(request, user)
        try:
            handle, history = parse_tail(request)
        except InvalidName as exc:
            return self.problem(request, user, 400, str(exc))
        if history:
            raise web.HTTPMethodNotAllowed("POST", ["GET"])
        posted = await request.post()
        typed = {k: str(v) for k, v in posted.items() if isinstance(v, str)}
        try:
            if typed.get("action") == "delete":
                return await self.delete(request, user, handle)
            return await self.save(request, user, handle, typed)
        except Exception as exc:
            if outcome_unknown(exc):  # it may have committed: never say "failed"
                return self.problem(request, user, 504, OUTCOME_UNKNOWN)
            if registry_unavailable(exc):
                t = Translator(choose(request)[0])
                return self.problem(request, user, 503, t("unavailable_text"))
            raise

    async def save(
        self, request: web.Request, user: ConsoleUser, handle: str, typed: dict[str, str]
    ) -> web.Response:
        creating = typed.get("mode") == "create"
        t = Translator(choose(request)[0])
        values, whole = await self.readable_values(handle, user)
        templates = await self.registry.templates.for_handle(handle)
        template = templates.get(typed.get("template", "")) or console_forms.current_template(
            values or [], templates
        )
        form = console_forms.build(template, values or [])
        new_values = console_forms.values_of(form, typed)
        # The template's own check first, so every field's error shows at once; the
        # registry checks again (and decides permissions) when it writes.
        errors = template.check(list(new_values)) if template is not None else []
        if not creating and not whole:
            # The form holds only the values this administrator may read: saving it
            # would drop the others.
            errors = [t("console_not_all_readable")]
        if not errors:
            result = await self.registry.create(
                handle,
                new_values,
                user.identity,
                overwrite=not creating,
                unless=None if creating else unchanged_since(typed.get("seen", "")),
            )
            if result.ok:
                log.info(
                    "console: %s %s %s", user.identity, "created" if creating else "saved", handle
                )
                raise web.HTTPSeeOther(handle_path(handle) + "?saved")
            if result.message == CHANGED_MEANWHILE:
                # Someone wrote the handle since this form was shown: saving would
                # silently undo their change. Shown again over the values now stored; a
                # second save is a deliberate overwrite.
                errors = [t("console_changed_meanwhile")]
                values, whole = await self.readable_values(handle, user)
            elif result.code == RC.INVALID_VALUE:
                errors = console_forms.split_errors(result.message or rc_name(result.code))
            else:
                errors = [f"{rc_name(result.code)}: {result.message}"]
        form = console_forms.build(template, values or [], typed, errors)
        return self.form_page(
            request,
            user,
            handle,
            form,
            exists=not creating and values is not None,
            seen=digest(values),
            status=400,
        )

    async def delete(self, request: web.Request, user: ConsoleUser, handle: str) -> web.Response:
        result = await self.registry.delete(handle, user.identity)
        if not result.ok:
            return self.problem(request, user, 403, f"{rc_name(result.code)}: {result.message}")
        log.info("console: %s deleted %s", user.identity, handle)
        prefix = prefix_of(handle)
        raise web.HTTPSeeOther(
            f"/console/prefixes/{quote(prefix)}?deleted={quote(handle, safe='')}"
        )

    def form_page(
        self,
        request: web.Request,
        user: ConsoleUser,
        handle: str,
        form: console_forms.Form,
        *,
        exists: bool,
        seen: str,
        status: int = 200,
    ) -> web.Response:
        return self.render(
            request,
            "console_handle.html",
            user,
            status=status,
            handle=handle,
            prefix=prefix_of(handle),
            form=form,
            exists=exists,
            saved="saved" in request.query,
            path=handle_path(handle),
            other_values=list(form.kept),
            seen=seen,
        )

    async def readable_values(
        self, handle: str, user: ConsoleUser
    ) -> tuple[list[HandleValue] | None, bool]:
        """The handle's values as the node serves them now (every write invalidates the
        caches before it is acknowledged) that this administrator may read, and whether
        that is all of them; None when the handle does not exist. Values without
        PUBLIC_READ are for those the REST API shows them to: server admins, and the
        handle's or its prefix's admins with AUTHORIZED_READ."""
        e = await self.pages.core.entry(handle)
        if isinstance(e, Resolution):
            if e.response_code == RC.HANDLE_NOT_FOUND:
                return None, True
            raise web.HTTPBadRequest(text=e.message or rc_name(e.response_code))
        if e.values_wire is None:
            return None, True
        values = list(decode_values(e.values_wire))
        if all(v.public_read for v in values) or await self.registry.may_read_restricted(
            handle, e.values_wire, user.identity
        ):
            return values, True
        return [v for v in values if v.public_read], False

    # --- history -----------------------------------------------------------------------

    async def history(self, request: web.Request, user: ConsoleUser, handle: str) -> web.Response:
        found = await self.registry.audit_history.of(handle, user.identity, HISTORY_ROWS)
        if not found.ok:
            return self.problem(request, user, 403, found.message)
        rows = [
            {
                "at": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(e.at)),
                "actor": e.actor,
                "op": e.op,
                "rc": rc_name(e.rc),
                "ok": e.rc == RC.SUCCESS,
                "change": f"{(e.before_sha256 or '-')[:12]} → {(e.after_sha256 or '-')[:12]}",
                "detail": e.detail,
            }
            for e in found.entries
        ]
        return self.render(
            request,
            "console_history.html",
            user,
            handle=handle,
            rows=rows,
            path=handle_path(handle),
            json_url="/api/audit/" + quote(handle, safe="/"),
        )

    def problem(
        self, request: web.Request, user: ConsoleUser, status: int, detail: str
    ) -> web.Response:
        return self.render(request, "console_problem.html", user, status=status, detail=detail)


CHANGED_MEANWHILE = "the handle changed since the form was shown"


def unchanged_since(seen: str) -> Callable[[bytes | None], str | None]:
    """A save's check inside its own write transaction: the stored values are still
    those the form was made from (checked before writing, a write in between could be
    undone unseen)."""

    def check(before: bytes | None) -> str | None:
        now = digest(None if before is None else list(decode_values(before)))
        return None if now == seen else CHANGED_MEANWHILE

    return check


def digest(values: list[HandleValue] | None) -> str:
    """What a form was made from, to tell a save that someone wrote the handle since."""
    if values is None:
        return ""
    return hashlib.sha256(encode_values(values)).hexdigest()[:32]


def handle_path(handle: str) -> str:
    return HANDLES + quote(handle, safe="/:@!$&'()*+,;=-._~")


def parse_tail(request: web.Request) -> tuple[str, bool]:
    """The handle a console path names, and whether it asks for the history."""
    raw = request.raw_path.split("?", 1)[0][len(HANDLES) :]
    history = raw.endswith(HISTORY)
    if history:
        raw = raw[: -len(HISTORY)]
    try:
        handle = unquote(raw, errors="strict")
    except UnicodeError:
        raise InvalidName("the handle in the path is not UTF-8") from None
    if any(part in (".", "..") for part in handle.split("/")):
        raise InvalidName("'.' and '..' are not handle parts")
    check_handle(handle)
    return handle, history
