"""API keys as the REST API and the console manage them (``/api/api-keys``): who may
see, make and revoke which keys. The keys themselves (made, hashed, stored, revoked)
are api_keys.py's, as ``idnode apikey`` uses them.

An administrator sees and revokes the keys that act as itself; a server administrator
sees and revokes every key, and may make one for any administrator. A key is shown once,
in the answer that creates it. Every creation and revocation leaves an audit row under
the administrator's handle.
"""

from __future__ import annotations

from idnode.resolver.codec import ResponseCode

from .api_keys import (
    MIN_ID_CHARS,
    ApiKey,
    ApiKeyError,
    create_api_key,
    digest,
    list_api_keys,
)
from .audit_trail import AuditTrail
from .auth import Identity
from .permissions import Permissions
from .store import Store

MAX_LABEL = 200  # characters of a key's label
MAX_KEYS_PER_ADMIN = 100  # keys one administrator may hold


class ApiKeyRefused(ApiKeyError):
    """Not allowed, or not found (a door answers 403 or 404; ``found`` says which)."""

    def __init__(self, message: str, *, found: bool = True) -> None:
        super().__init__(message)
        self.found = found


class ApiKeys:
    def __init__(self, store: Store, permissions: Permissions, audit: AuditTrail) -> None:
        self.store = store
        self.permissions = permissions
        self.audit = audit

    def _sees(self, who: Identity, key: ApiKey) -> bool:
        return self.permissions.is_server_admin(who) or self.permissions.same_identity(
            who, key.admin
        )

    async def visible(self, who: Identity) -> list[ApiKey]:
        """The keys ``who`` may see: its own, or all for a server administrator."""
        return [k for k in await list_api_keys(self.store) if self._sees(who, k)]

    async def create(
        self, who: Identity, label: str = "", admin: Identity | None = None
    ) -> tuple[str, ApiKey]:
        """A new key acting as ``admin`` (default: ``who``; another admin only for a
        server administrator): the key itself, shown once, and its stored form."""
        label = label.strip()
        if len(label) > MAX_LABEL:
            raise ApiKeyError(f"a label is at most {MAX_LABEL} characters")
        target = admin or who
        if not self.permissions.same_identity(who, target) and not (
            self.permissions.is_server_admin(who)
        ):
            raise ApiKeyRefused(f"{who} may make keys only for itself, not for {target}")
        held = [k for k in await list_api_keys(self.store) if self._sees(target, k)]
        if sum(self.permissions.same_identity(k.admin, target) for k in held) >= MAX_KEYS_PER_ADMIN:
            raise ApiKeyRefused(f"{target} holds {MAX_KEYS_PER_ADMIN} keys: revoke one first")
        key = await create_api_key(self.store, target, label)
        made = next(k for k in await list_api_keys(self.store) if k.sha256 == digest(key))
        await self.audit.record(
            who, "API_KEY_CREATE", target.handle, ResponseCode.SUCCESS, f"key {made.id}"
        )
        return key, made

    async def revoke(self, who: Identity, key_id: str) -> ApiKey:
        """Revoke the key ``key_id`` names (an id, at least MIN_ID_CHARS hex digits of its
        digest) if ``who`` may see it; a key it may not see is as good as absent."""
        text = key_id.strip().lower()
        if len(text) < MIN_ID_CHARS or any(c not in "0123456789abcdef" for c in text):
            raise ApiKeyError(f"a key id is at least {MIN_ID_CHARS} hex digits")
        found = [k for k in await self.visible(who) if k.sha256.startswith(text)]
        if not found:
            raise ApiKeyRefused(f"no API key {key_id} of yours", found=False)
        if len(found) > 1:
            raise ApiKeyError(f"{key_id} names {len(found)} keys: give more digits of the id")
        if not await self.store.delete_api_key(found[0].sha256):
            raise ApiKeyRefused(f"API key {key_id} was revoked meanwhile", found=False)
        await self.audit.record(
            who, "API_KEY_REVOKE", found[0].admin.handle, ResponseCode.SUCCESS, f"key {found[0].id}"
        )
        return found[0]
