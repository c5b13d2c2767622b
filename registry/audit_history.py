"""Reading a handle's audit history (the console's history page, GET /api/audit/{handle}):
for the handle's administrators (an admin record of the handle, else of its prefix, of
any permission) and server administrators. A refusal is not written to the audit log:
it changes nothing, and any administrator could otherwise grow the log without limit by
asking again; it is logged (INFO) instead."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from idnode.resolver.codec import ResponseCode, decode_values

from .audit_trail import AuditTrail
from .auth import Identity
from .names import normalize
from .permissions import Permissions, admins_in
from .store import AuditEntry, Refusal, Store

__all__ = ["MAX_ROWS", "AuditEntry", "AuditHistory", "History"]

RC = ResponseCode
MAX_ROWS = 1000
log = logging.getLogger("idnode.registry.audit_history")


@dataclass(frozen=True)
class History:
    code: int
    message: str = ""
    entries: tuple[AuditEntry, ...] = ()  # newest first

    @property
    def ok(self) -> bool:
        return self.code == RC.SUCCESS


class AuditHistory:
    def __init__(self, store: Store, permissions: Permissions, audit: AuditTrail) -> None:
        self.store = store
        self.permissions = permissions
        self.audit = audit

    async def of(self, handle: str, who: Identity, limit: int = 100) -> History:
        """The newest ``limit`` (at most MAX_ROWS) audit rows of ``handle``."""
        if not self.permissions.is_server_admin(who):
            key = normalize(handle, self.store.case_sensitive)
            found = (await self.store.get_many([key])).get(key)
            admins = admins_in(decode_values(found)) if found else []
            admins = admins or await self.permissions.prefix_admins(handle)
            groups = await self.permissions.load_groups(admins)
            if not self.permissions.granted(who, admins, 0, groups):
                exc = Refusal(
                    RC.INSUFFICIENT_PERMISSIONS,
                    f"{who} is no administrator of {handle}, so may not read its history",
                )
                log.info("audit history of %s refused to %s", handle, who)
                return History(exc.rc, exc.message)
        rows = await self.store.audit_for(handle, max(1, min(limit, MAX_ROWS)))
        return History(RC.SUCCESS, entries=tuple(rows))
