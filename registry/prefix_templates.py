"""Metadata templates by prefix: publishing a version, finding the versions a handle may
name (cached a short while per worker), and checking a value list against the one it names.

Versions never change and a new version keeps every item of the last (templates.py has
the document rules); a derived prefix may use its ancestors' templates, nearest first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from idnode.resolver.codec import AdminPermission, HandleValue, ResponseCode
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE

from .audit_trail import AuditTrail
from .auth import Identity
from .names import NA_PREFIX, PrefixAuthority, normalize, prefix_of
from .permissions import Permissions
from .results import WriteResult
from .store import Refusal, Store
from .templates import (
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    Template,
    TemplateError,
    check_successor,
    parse_template,
)

TEMPLATE_CACHE_SECONDS = 30.0  # how late a worker may see another worker's new version

RC = ResponseCode


def check_values(values: Iterable[HandleValue], templates: dict[str, Template]) -> None:
    """Refuse a value list that breaks the template it names (one message per field)."""
    vals = list(values)
    named = next((v for v in vals if v.index == TEMPLATE_INDEX), None)
    if named is None:
        return
    if named.type != TEMPLATE_TYPE:
        raise Refusal(
            RC.INVALID_VALUE,
            f"index {TEMPLATE_INDEX} is for the TEMPLATE value, not {named.type}",
        )
    version = named.data.decode("utf-8", "replace")
    t = templates.get(version)
    if t is None:
        raise Refusal(RC.INVALID_VALUE, f"template {version!r} does not exist for this prefix")
    errors = t.check(vals)
    if errors:
        raise Refusal(RC.INVALID_VALUE, "; ".join(errors))


class PrefixTemplates:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        permissions: Permissions,
        audit: AuditTrail,
    ) -> None:
        self.store = store
        self.authority = authority
        self.permissions = permissions
        self.audit = audit
        self.case_sensitive = store.case_sensitive
        self._cache: dict[str, tuple[float, dict[str, Template]]] = {}

    async def of_prefix(self, prefix: str, fresh: bool = False) -> dict[str, Template]:
        """The prefix's own versions, oldest first; ``fresh`` reads past the cache."""
        key = normalize(prefix, self.case_sensitive)
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[0] > time.monotonic():
            return cached[1]
        found = {v: Template.from_json(doc) for v, doc in await self.store.templates(prefix)}
        self._cache[key] = (time.monotonic() + TEMPLATE_CACHE_SECONDS, found)
        return found

    async def for_handle(self, handle: str) -> dict[str, Template]:
        """Template versions a handle may name: its prefix's, else its ancestors' (nearest wins)."""
        out: dict[str, Template] = {}
        p = prefix_of(handle)
        while p:
            for version, t in (await self.of_prefix(p)).items():
                out.setdefault(version, t)
            p = p.rpartition(".")[0]
        return out

    async def put(self, document: Any, who: Identity) -> WriteResult:
        """Add a template version to a prefix (versions never change; items never vanish)."""
        try:
            return await self._put(document, who)
        except Refusal as exc:
            return WriteResult.refused(exc)

    async def _put(self, document: Any, who: Identity) -> WriteResult:
        try:
            t = parse_template(document)
        except TemplateError as exc:
            raise Refusal(RC.INVALID_VALUE, str(exc)) from None
        if not self.authority.is_homed(t.prefix):
            raise Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
        target = NA_PREFIX + t.prefix
        try:
            await self.permissions.require_of_prefix(
                who, t.prefix, AdminPermission.MODIFY_VALUE, "change this prefix's templates"
            )
            existing = await self.of_prefix(t.prefix, fresh=True)
            if t.version in existing:
                if existing[t.version] == t:
                    return WriteResult(RC.SUCCESS)  # the same version again: a safe retry
                raise Refusal(
                    RC.VALUE_ALREADY_EXISTS,
                    f"template version {t.version} exists; publish a new version",
                )
            if existing:
                latest = list(existing.values())[-1]
                try:
                    check_successor(latest, t)
                except TemplateError as exc:
                    raise Refusal(RC.INVALID_VALUE, str(exc)) from None
        except Refusal as exc:
            await self.audit.refused(who, "PUT_TEMPLATE", target, exc)
            raise
        if not await self.store.put_template(t.prefix, t.version, t.to_json(), str(who)):
            raise Refusal(RC.VALUE_ALREADY_EXISTS, f"template version {t.version} exists")
        self._cache.pop(normalize(t.prefix, self.case_sensitive), None)
        await self.audit.record(who, "PUT_TEMPLATE", target, RC.SUCCESS, f"version {t.version}")
        return WriteResult(RC.SUCCESS, changed=True)
