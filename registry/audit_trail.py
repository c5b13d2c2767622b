"""The audit rows the registry's parts write beside the store's own: refusals decided
before a transaction, prefix and template changes, failed logins."""

from __future__ import annotations

from idnode.errors import RequestRefused

from .auth import Identity
from .names import normalize
from .store import AuditEntry, Store, now


class AuditTrail:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.case_sensitive = store.case_sensitive

    async def record(
        self, who: Identity | str, op: str, handle: str, rc: int, detail: str = ""
    ) -> None:
        await self.store.append_audit(
            AuditEntry(
                now(), str(who), op, normalize(handle, self.case_sensitive), rc, detail=detail
            )
        )

    async def refused(self, who: Identity, op: str, handle: str, exc: RequestRefused) -> None:
        await self.record(who, op, handle, exc.rc, exc.message)
