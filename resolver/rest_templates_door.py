"""Metadata templates over REST, beside the IDIS template API (/snms/api/v5/template):

    GET /api/templates/{prefix}      {"templates": [document, ...]}, oldest version first
    PUT /api/templates/{prefix}      a template document: publish a new version

Reading is public (the IDIS API's GET is too: templates describe a prefix's data, not
its values), so it is served from the worker's template cache (a version published on
another worker or node shows within ``TEMPLATE_CACHE_SECONDS``, 30 s; on this worker at
once, since a publish empties the prefix's cache entry): an anonymous GET never forces
a registry read. Publishing needs an administrator of the prefix (MODIFY_VALUE on
``0.NA/<prefix>``); versions never change and items are never deleted
(registry/prefix_templates.py). The console's template page calls the same methods.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from idnode.registry.auth import Identity
from idnode.registry.names import InvalidName, check_prefix

from .codec import ResponseCode
from .rest_door import RestPart, http_status, json_body, reply

RC = ResponseCode
TEMPLATES = "/api/templates"


class TemplatesApi(RestPart):
    def add_routes(self, app: web.Application) -> None:
        app.router.add_get(TEMPLATES + "/{prefix}", self.get)
        app.router.add_put(TEMPLATES + "/{prefix}", self.put)

    async def versions(self, prefix: str, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The prefix's versions; ``fresh`` reads past the cache (for a publisher's page)."""
        found = await self.registry.templates.of_prefix(prefix, fresh=fresh)
        return [json.loads(t.to_json()) for t in found.values()]

    async def get(self, request: web.Request) -> web.Response:
        prefix = request.match_info["prefix"]
        try:
            check_prefix(prefix)
        except InvalidName as exc:
            return reply(RC.INVALID_HANDLE, status=400, message=str(exc))
        # Read past the worker's cache: a publisher reads its new version at once, whichever
        # worker answers (the cache serves the write path's checks, not this listing).
        return reply(RC.SUCCESS, prefix=prefix, templates=await self.versions(prefix, fresh=True))

    async def put(self, request: web.Request) -> web.Response:
        who = await self.rest.need_identity(request)
        doc = await json_body(request, b"null")
        if isinstance(doc, web.Response):
            return doc
        return await self.publish(request.match_info["prefix"], doc, who)

    async def publish(self, prefix: str, doc: Any, who: Identity) -> web.Response:
        """Publish ``doc`` as a version of ``prefix``: 201 when new, 200 when the same
        version was published already; 400 with the template's own error otherwise."""
        if isinstance(doc, dict):
            doc.setdefault("prefix", prefix)
            if doc["prefix"] != prefix:
                return reply(
                    RC.INVALID_VALUE,
                    status=400,
                    message=f'"prefix" is {doc["prefix"]!r}, the address names {prefix!r}',
                )
        r = await self.registry.put_template(doc, who)
        if not r.ok:
            return reply(r.code, status=http_status(r.code), message=r.message)
        return reply(RC.SUCCESS, status=201 if r.changed else 200, prefix=prefix)
