"""Reverse lookup over HTTP: the EUDAT B2HANDLE reverse-lookup servlet's API, which
pyhandle's ``search_handle`` calls (``GET /hrls/handles?URL=http://example.org/*``).

Query parameters are ``TYPE=pattern`` terms (any value type; all must match; ``*`` is the
wildcard, after literal text or alone) and the servlet's ``limit``, ``page`` and
``retrieverecords``. The answer is a JSON list of handles, or with
``retrieverecords=true`` an object of handle to its public values (the REST API's JSON
form of a value). pyhandle writes the values into the query unencoded, so the query is
split on ``&`` and the first ``=`` and percent-decoded, with ``+`` kept as ``+`` (a URL's
``+`` is a plus, not a space).

Credentials: Basic ``index%3Ahandle:secret`` (pyhandle's reverselookup_username and
password), Bearer or a REST session, as on /api/handles. Server administrators search
every handle, other administrators the prefixes whose admins grant them LIST_HANDLES
(registry/value_search.py). Without credentials: 401. With --search-index off: 501, and
the message says how to turn it on.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING
from urllib.parse import unquote

from aiohttp import web

from idnode.registry.value_search import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    NOT_ON,
    SearchBusy,
    SearchRefused,
    SearchUnavailable,
    Term,
)

from .codec import decode_values
from .codec.jsonform import value_to_json

if TYPE_CHECKING:
    from .rest_door import RestApi

SEARCH = "/hrls/handles"
CONTROL = {"limit", "page", "retrieverecords"}
MAX_QUERY = 8192

log = logging.getLogger("idnode.search")


def _error(status: int, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers or None)


def parse_query(raw: str) -> tuple[list[Term], int, int, bool]:
    """Terms, limit, page and retrieverecords out of a raw query string."""
    if len(raw) > MAX_QUERY:
        raise SearchRefused(f"the query is over {MAX_QUERY} characters")
    terms: list[Term] = []
    limit, page, records = DEFAULT_LIMIT, 0, False
    for part in raw.split("&"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        try:
            name = unquote(name, errors="strict")
            value = unquote(value, errors="strict")
        except UnicodeDecodeError:
            raise SearchRefused("the query is not UTF-8") from None
        if not eq:
            raise SearchRefused(f"{name!r} needs =value")
        low = name.lower()
        if low in CONTROL:
            if low == "retrieverecords":
                records = value.lower() == "true"
                continue
            if not value.isascii() or not value.isdigit() or len(value) > 9:
                raise SearchRefused(f"{low} must be a whole number")
            if low == "limit":
                limit = int(value)
            else:
                page = int(value)
            continue
        terms.append(Term.parse(name, value))
    if not 0 < limit <= MAX_LIMIT:
        raise SearchRefused(f"limit must be 1..{MAX_LIMIT}")
    return terms, limit, page, records


class SearchApi:
    def __init__(self, rest: RestApi) -> None:
        self.rest = rest

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(SEARCH, self.search)
        app.router.add_get(SEARCH + "/", self.search)

    async def search(self, request: web.Request) -> web.Response:
        registry = self.rest.registry
        if registry is None:
            return _error(501, "this node has no registry to search")
        if not registry.search.enabled:
            return _error(501, NOT_ON)
        try:
            terms, limit, page, records = parse_query(request.query_string)
        except SearchRefused as exc:
            return _error(400, str(exc))
        who = await self.rest.identity(request)
        if who is None:
            return _error(
                401,
                "reverse lookup needs an administrator: Basic index%3Ahandle:secret",
                **{"WWW-Authenticate": 'Basic realm="hrls"'},
            )
        try:
            hits = await registry.search.find(terms, who, limit=limit, page=page)
        except SearchRefused as exc:
            return _error(400, str(exc))
        except SearchUnavailable as exc:
            return _error(501 if exc.off else 503, str(exc))
        except SearchBusy as exc:
            return _error(429, str(exc), **{"Retry-After": "1"})
        if hits is None:
            return _error(403, f"{who} administers no prefix here it may search")
        log.debug("search by %s: %d terms, %d handles", who, len(terms), len(hits))
        if not records:
            return web.json_response([h.handle for h in hits])
        return web.json_response(
            {
                h.handle: [value_to_json(v) for v in decode_values(h.vals) if v.public_read]
                for h in hits
            }
        )
