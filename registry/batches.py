"""Batches: up to MAX_BATCH new handles in one statement and one transaction.

One bad record never stops the others: each is validated and authorised on its own, and
gets its own result. A record that exists with the same values succeeds again (retries
are safe); with other values it is a conflict (101) unless ``replace`` (server
administrators only).
"""

from __future__ import annotations

from collections.abc import Sequence

from idnode.resolver.codec import AdminPermission, HandleValue, ResponseCode
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE

from .auth import Identity
from .names import InvalidName, check_handle, normalize, prefix_of, storage_prefix
from .permissions import Permissions
from .prefix_templates import PrefixTemplates, check_values
from .results import BatchItem
from .statistics import USAGE
from .store import REGISTERED_ALREADY, AuditEntry, HandleRecord, Refusal, now
from .templates import TEMPLATE_INDEX, Template
from .value_checks import prepare
from .writes import HandleWrites

MAX_BATCH = 2000

RC = ResponseCode


class Batches:
    def __init__(
        self, writes: HandleWrites, permissions: Permissions, templates: PrefixTemplates
    ) -> None:
        self.writes = writes
        self.store = writes.store
        self.permissions = permissions
        self.templates = templates
        self.case_sensitive = writes.store.case_sensitive

    async def create(
        self,
        items: Sequence[tuple[str, tuple[HandleValue, ...]]],
        who: Identity,
        *,
        replace: bool = False,
    ) -> list[BatchItem]:
        """Create up to MAX_BATCH handles: one result per item, in order. A batch too
        large, or a replace by anyone but a server administrator, is refused whole
        (Refusal raised)."""
        if len(items) > MAX_BATCH:
            raise Refusal(RC.INVALID_VALUE, f"{len(items)} records: at most {MAX_BATCH} a batch")
        if replace and not self.permissions.is_server_admin(who):
            raise Refusal(RC.INSUFFICIENT_PERMISSIONS, "only server administrators may replace")
        results: list[BatchItem | None] = [None] * len(items)
        admins_by_prefix = await self.permissions.admins_by_prefix([h for h, _ in items], who)
        distinct = {id(admins): admins for admins in admins_by_prefix.values()}
        batch_groups = await self.permissions.load_groups(
            [a for admins in distinct.values() for a in admins]
        )
        good: list[tuple[int, HandleRecord]] = []
        seen: dict[str, int] = {}
        rooms: dict[str, int | None] = {}
        templates_by_prefix: dict[str, dict[str, Template]] = {}
        refused: list[AuditEntry] = []
        for i, (handle, values) in enumerate(items):
            try:
                check_handle(handle)
                if not self.writes.authority.serves(handle):
                    raise Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
                suspensions = self.writes.suspensions
                if suspensions and (suspended := suspensions.refusal(handle)) is not None:
                    raise suspended
                site = self.writes.site
                if site is not None and (elsewhere := site.refusal(handle)) is not None:
                    raise Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, elsewhere)
                prefix = normalize(prefix_of(handle), self.case_sensitive)
                self.permissions.require(
                    who,
                    admins_by_prefix.get(prefix, []),
                    AdminPermission.ADD_HANDLE,
                    "create handles here",
                    batch_groups,
                )
                vals = prepare(values, self.writes.sealer)
                if any(v.index == TEMPLATE_INDEX for v in values):
                    p_key = prefix_of(handle)
                    if p_key not in templates_by_prefix:
                        templates_by_prefix[p_key] = await self.templates.for_handle(handle)
                    check_values(values, templates_by_prefix[p_key])
                key = normalize(handle, self.case_sensitive)
                if key in seen:
                    raise Refusal(
                        RC.HANDLE_ALREADY_EXISTS, f"also record {seen[key] + 1} of this batch"
                    )
                if self.writes.quotas is not None:
                    p = storage_prefix(handle)
                    if p not in rooms:
                        rooms[p] = await self.writes.room(handle)
                    room = rooms[p]
                    if room is not None:
                        if room < 1:
                            raise Refusal(
                                RC.REGISTER_COUNT_LIMIT,
                                f"prefix {p} has reached its registration quota",
                            )
                        rooms[p] = room - 1
                seen[key] = i
                good.append((i, HandleRecord(handle, vals)))
            except (Refusal, InvalidName) as exc:
                rc = exc.rc if isinstance(exc, Refusal) else RC.INVALID_HANDLE
                msg = exc.message if isinstance(exc, Refusal) else str(exc)
                results[i] = BatchItem(handle, rc, msg)
                USAGE.refused(handle)
                refused.append(
                    AuditEntry(
                        now(),
                        str(who),
                        "BATCH_CREATE",
                        normalize(handle, self.case_sensitive),
                        rc,
                        detail=msg,
                    )
                )
        if refused:
            await self.store.append_audit_many(refused)
        if good:
            await self._write(good, results, who, replace)
        return [r for r in results if r is not None]

    async def _write(
        self,
        good: list[tuple[int, HandleRecord]],
        results: list[BatchItem | None],
        who: Identity,
        replace: bool,
    ) -> None:
        outcome = await self.store.create_many(
            [r for _, r in good], actor=str(who), op="BATCH_CREATE", replace=replace
        )
        changed = []
        quotas = self.writes.quotas
        for i, rec in good:
            rc, msg = outcome[normalize(rec.handle, self.case_sensitive)]
            results[i] = BatchItem(rec.handle, rc, msg)
            if rc == RC.SUCCESS and msg != REGISTERED_ALREADY:
                changed.append(rec.handle)
                USAGE.registered(rec.handle)  # statistics reported upward
                if quotas is not None:
                    quotas.used(storage_prefix(rec.handle), 1)
        if changed:
            await self.writes.changed(changed)
