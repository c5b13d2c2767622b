"""The prefixes this node serves: homing and unhoming them (server administrators only),
listing them, and listing the handles under one (its admins' LIST_HANDLES)."""

from __future__ import annotations

from idnode.resolver.codec import AdminPermission, ResponseCode
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE

from .audit_trail import AuditTrail
from .auth import Identity
from .names import NA_PREFIX, PrefixAuthority, normalize, prefix_of
from .permissions import Permissions
from .results import Listing, WriteResult
from .store import AuditEntry, Refusal, Store, now

RC = ResponseCode


class HomedPrefixes:
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

    async def list_handles(
        self, prefix_handle: str, who: Identity, *, after: str = "", limit: int = 100_000
    ) -> Listing:
        """The handles under the prefix of ``prefix_handle`` (``0.NA/88.166.1001``) in key
        order: at most ``limit``, those after ``after`` (keyset paging, the console's)."""
        prefix = prefix_of(prefix_handle)
        if not self.authority.is_homed(prefix):
            return Listing(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
        try:
            await self.permissions.require_of_prefix(
                who, prefix, AdminPermission.LIST_HANDLES, "list handles under this prefix"
            )
        except Refusal as exc:
            await self.audit.refused(who, "LIST_HANDLES", prefix_handle, exc)
            return Listing.refused(exc)
        listed = await self.store.list_handles(prefix, limit, after=after)
        return Listing(RC.SUCCESS, handles=tuple(listed))

    async def home(self, prefix_handle: str, who: Identity) -> WriteResult:
        prefix = prefix_of(prefix_handle)
        try:
            await self._server_admin_only(who, "HOME_NA", prefix_handle)
        except Refusal as exc:
            return WriteResult.refused(exc, prefix_handle)
        await self.store.home_prefix(prefix, str(who))
        self.authority.replace([*self.authority.homed, prefix])
        await self._done(who, "HOME_NA", prefix_handle)
        return WriteResult(RC.SUCCESS, changed=True, handle=prefix_handle)

    async def unhome(self, prefix_handle: str, who: Identity) -> WriteResult:
        prefix = prefix_of(prefix_handle)
        try:
            await self._server_admin_only(who, "UNHOME_NA", prefix_handle)
        except Refusal as exc:
            return WriteResult.refused(exc, prefix_handle)
        if not await self.store.unhome_prefix(prefix):
            return WriteResult(RC.HANDLE_NOT_FOUND, f"{prefix} is not homed here")
        self.authority.replace(await self.store.homed_prefixes())
        await self._done(who, "UNHOME_NA", prefix_handle)
        return WriteResult(RC.SUCCESS, changed=True, handle=prefix_handle)

    async def list_homed(self, who: Identity) -> Listing:
        try:
            await self._server_admin_only(who, "LIST_HOMED_NAS", "/")
        except Refusal as exc:
            return Listing.refused(exc)
        homed = await self.store.homed_prefixes()
        return Listing(RC.SUCCESS, handles=tuple(NA_PREFIX + p for p in sorted(homed)))

    async def _server_admin_only(self, who: Identity, op: str, target: str) -> None:
        if not self.permissions.is_server_admin(who):
            exc = Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} is not a server administrator")
            await self.audit.refused(who, op, target, exc)
            raise exc

    async def _done(self, who: Identity, op: str, prefix_handle: str) -> None:
        # Prefix rows are audited case-folded whatever the store's handle rule.
        await self.store.append_audit(
            AuditEntry(now(), str(who), op, normalize(prefix_handle), RC.SUCCESS)
        )
