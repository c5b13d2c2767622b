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
from .quotas import Reservation
from .results import BatchItem
from .statistics import USAGE
from .store import REGISTERED_ALREADY, AuditEntry, CommitUnknown, HandleRecord, Refusal, now
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
        # Every reservation made is settled whatever fails after it (a second prefix's
        # reservation, the audit insert, the write): a reservation left in Redis holds
        # the prefix's room until a quiet moment reconciles it, refusing writes meanwhile.
        reservations: dict[str, Reservation] = {}
        registered: dict[str, int] = {}
        try:
            await self._reserve(good, results, refused, who, reservations)
            if refused:
                await self.store.append_audit_many(refused)
            if good:
                try:
                    await self._write(good, results, who, replace, registered)
                except CommitUnknown:
                    # It may all have committed: counted as registered (an overcount the
                    # next reconcile corrects, never room for more than the quota).
                    for _, rec in good:
                        p = storage_prefix(rec.handle)
                        registered[p] = registered.get(p, 0) + 1
                    raise
        finally:  # what was not registered (refused, existed, failed) is given back
            quotas = self.writes.quotas
            if quotas is not None:
                for p, r in reservations.items():
                    await quotas.settle(r, min(r.granted, registered.get(p, 0)))
        return [r for r in results if r is not None]

    async def _reserve(
        self,
        good: list[tuple[int, HandleRecord]],
        results: list[BatchItem | None],
        refused: list[AuditEntry],
        who: Identity,
        reservations: dict[str, Reservation],
    ) -> None:
        """Reserve quota for the records that passed every other check, one reservation
        per prefix, each put in ``reservations`` as soon as it is made (the caller
        settles them whatever fails later); records past a prefix's room are refused
        (RC 604), in order, and taken out of ``good``."""
        if self.writes.quotas is None:
            return
        wanted: dict[str, int] = {}
        for _, rec in good:
            p = storage_prefix(rec.handle)
            wanted[p] = wanted.get(p, 0) + 1
        for p, n in wanted.items():
            r = await self.writes.reserve(p + "/", n)
            if r is not None:
                reservations[p] = r
        left = {p: r.granted for p, r in reservations.items()}
        kept: list[tuple[int, HandleRecord]] = []
        for i, rec in good:
            p = storage_prefix(rec.handle)
            if p in left:
                if left[p] < 1:
                    msg = f"prefix {p} has reached its registration quota"
                    results[i] = BatchItem(rec.handle, RC.REGISTER_COUNT_LIMIT, msg)
                    USAGE.refused(rec.handle)
                    key = normalize(rec.handle, self.case_sensitive)
                    refused.append(
                        AuditEntry(
                            now(),
                            str(who),
                            "BATCH_CREATE",
                            key,
                            RC.REGISTER_COUNT_LIMIT,
                            detail=msg,
                        )
                    )
                    continue
                left[p] -= 1
            kept.append((i, rec))
        good[:] = kept

    async def _write(
        self,
        good: list[tuple[int, HandleRecord]],
        results: list[BatchItem | None],
        who: Identity,
        replace: bool,
        registered: dict[str, int],
    ) -> None:
        outcome = await self.store.create_many(
            [r for _, r in good], actor=str(who), op="BATCH_CREATE", replace=replace
        )
        changed = []
        for i, rec in good:
            rc, msg = outcome[normalize(rec.handle, self.case_sensitive)]
            results[i] = BatchItem(rec.handle, rc, msg)
            if rc == RC.SUCCESS and msg != REGISTERED_ALREADY:
                changed.append(rec.handle)
                USAGE.registered(rec.handle)  # statistics reported upward
                p = storage_prefix(rec.handle)
                registered[p] = registered.get(p, 0) + 1
        if changed:
            await self.writes.changed(changed)
