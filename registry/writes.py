"""Writes of one handle: create (with overwrite or a minted suffix), delete, and value
changes (add, put, modify, remove).

Each write reads what its checks need first (prefix admins, HS_VLIST groups, templates,
quota room), then decides inside the store's transaction on the values as they are
under the lock. A refusal leaves nothing but its audit row; a write that changed the
registry calls ``on_change`` (the node invalidates Redis and every worker's L1) before
its result is returned. Once committed, a write is reported as committed: nothing after
the commit turns it into a failure.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable

from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    ResponseCode,
    decode_values,
)
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE, TYPE_ADMIN

from .audit_trail import AuditTrail
from .auth import Identity
from .names import (
    NA_PREFIX,
    InvalidName,
    PrefixAuthority,
    check_handle,
    is_prefix_handle,
    prefix_of,
    storage_prefix,
)
from .permissions import Groups, Permissions, admins_in
from .prefix_applications import Suspensions
from .prefix_templates import PrefixTemplates, check_values
from .quotas import Quotas, Reservation
from .results import WriteResult
from .sealing import Sealer
from .site_servers import SiteServers
from .statistics import USAGE
from .store import KEEP, UNREAD, Outcome, Refusal, Store, Unread
from .templates import Template
from .value_checks import encode_sorted, keep_unchanged_timestamps, prepare

OnChange = Callable[[list[str]], Awaitable[None]]
Decide = Callable[[bytes | None], Outcome]
Values = dict[int, HandleValue]  # a handle's values by index, being changed
Check = Callable[[int, str], None]  # refuse unless the writer has this permission
Apply = Callable[[Values, tuple[HandleValue, ...], Check], str]

MINT_ATTEMPTS = 4
MINT_DRAWS_PER_SERVER = 64  # draws per server of the site for one that hashes here

log = logging.getLogger("idnode.registry")

RC = ResponseCode
AP = AdminPermission


def mint_handle(stem: str) -> str:
    """The reference's minted handle (HandleSuffixMinter): the stem as given, then a random
    version-4 UUID in lower case, e.g. 88.166/DOC-1b4e28ba-2fa1-41d2-883f-0016d3cca427.
    A bare prefix ("88.166") gets its "/" first rather than becoming part of the suffix."""
    if "/" not in stem:
        stem += "/"
    return stem + str(uuid.uuid4())


def _existing(handle: str, before: bytes | None) -> tuple[HandleValue, ...]:
    if before is None:
        raise Refusal(RC.HANDLE_NOT_FOUND, f"{handle} does not exist")
    return decode_values(before)


class HandleWrites:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        permissions: Permissions,
        templates: PrefixTemplates,
        audit: AuditTrail,
        *,
        sealer: Sealer | None = None,
        quotas: Quotas | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.store = store
        self.authority = authority
        self.permissions = permissions
        self.templates = templates
        self.audit = audit
        self.sealer = sealer
        self.quotas = quotas
        self.on_change = on_change
        self._telling: set[asyncio.Task[None]] = set()  # invalidations of unknown outcomes
        # Suspended prefixes (registry/prefix_applications.py): no writes under them.
        self.suspensions: Suspensions | None = None
        # One server of a multi-server site: handles that hash to another server of the
        # site are that server's to write (registry/site_servers.py); set by the node.
        self.site: SiteServers | None = None

    # --- create ------------------------------------------------------------------------

    async def create(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool = False,
        mint: bool = False,
        unless: Callable[[bytes | None], str | None] | None = None,
    ) -> WriteResult:
        """Create ``handle``, or replace it when ``overwrite``; the result says which.

        ``unless`` sees the handle's stored values in the write's own transaction and
        refuses the write by returning why (RC 2, ERROR, with that message): a
        compare-and-write, e.g. the console's "changed while you were editing".

        With ``mint``, ``handle`` is a stem ("88.166/" or "88.166/DOC-") and the handle
        is the stem followed by a random UUID, as the reference server's
        HandleSuffixMinter does. A minted handle is always new: it never overwrites.
        """
        if not mint:
            return await self._create_checked(handle, values, who, overwrite, unless)
        created = WriteResult(RC.ERROR, "no handle minted", handle=handle)
        for _ in range(MINT_ATTEMPTS):  # a UUID collision is a retry, never a failure
            minted = self._mint_here(handle)
            if minted is None:
                return WriteResult(
                    RC.ERROR,
                    f"no minted handle under {handle} hashed to this server of the site "
                    f"in {self._mint_draws()} draws; mint on another server of the site",
                    handle=handle,
                )
            created = await self._create_one(minted, values, who, overwrite=False)
            if created.code != RC.HANDLE_ALREADY_EXISTS:
                break
        return created

    def _mint_draws(self) -> int:
        # On a site of N servers a draw hashes here with chance 1/N: 64 * N draws all
        # miss with chance (1 - 1/N) ** (64 * N) < e ** -64, never in practice.
        return MINT_DRAWS_PER_SERVER * (len(self.site.site.servers) if self.site else 1)

    def _mint_here(self, stem: str) -> str | None:
        """A minted handle under ``stem`` that this server of the site holds (any, on a
        single server); None when every draw hashed to another server."""
        for _ in range(self._mint_draws()):
            minted = mint_handle(stem)
            if self.site is None or self.site.holder(minted) is None:
                return minted
        return None

    async def _create_one(
        self, handle: str, values: tuple[HandleValue, ...], who: Identity, *, overwrite: bool
    ) -> WriteResult:
        return await self._create_checked(handle, values, who, overwrite, None)

    async def _create_checked(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        overwrite: bool,
        unless: Callable[[bytes | None], str | None] | None,
    ) -> WriteResult:
        try:
            await self._check_target(handle, who, "CREATE")
            new = prepare(values, self.sealer)
        except Refusal as exc:
            return WriteResult.refused(exc, handle)
        templates = await self.templates.for_handle(handle)
        reservation = await self.reserve(handle, 1)
        registered = 0
        try:
            done = await self._create_reserved(
                handle, values, who, new, templates, reservation, overwrite=overwrite, unless=unless
            )
            registered = int(done.ok and not done.replaced)
            return done
        finally:  # a refused or failed write gives its reservation back
            if self.quotas is not None:
                await self.quotas.settle(reservation, registered)

    async def _create_reserved(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        new: bytes,
        templates: dict[str, Template],
        reservation: Reservation | None,
        *,
        overwrite: bool,
        unless: Callable[[bytes | None], str | None] | None = None,
    ) -> WriteResult:
        if is_prefix_handle(handle):
            parent = prefix_of(handle).rpartition(".")[0]
            admins_of = parent + "/" if parent else ""  # "": a top-level prefix has none
            needed = AP.ADD_DERIVED_PREFIX
        else:
            admins_of = handle
            needed = AP.ADD_HANDLE
        if overwrite:  # the handle's own HS_ADMIN may name groups too: read with the prefix's
            admins, groups = await self.permissions.context_for(handle, admins_of)
        else:
            admins = await self.permissions.prefix_admins(admins_of) if admins_of else []
            groups = await self.permissions.load_groups(admins)
        replaced = False

        def decide(before: bytes | None) -> Outcome:
            nonlocal replaced
            refused = unless(before) if unless is not None else None
            if refused is not None:
                raise Refusal(RC.ERROR, refused)
            if before is not None and not overwrite:
                raise Refusal(RC.HANDLE_ALREADY_EXISTS, f"{handle} already exists")
            written = new
            if before is None:
                self.permissions.require(who, admins, needed, "create handles here", groups)
            else:
                current = decode_values(before)
                written = keep_unchanged_timestamps(current, new)
                self.permissions.may_replace(
                    who, current, decode_values(written), admins, needed, groups
                )
            check_values(values, templates)
            if before is None and reservation is not None and reservation.granted < 1:
                raise Refusal(
                    RC.REGISTER_COUNT_LIMIT,
                    f"prefix {prefix_of(handle)} has reached its registration quota",
                )
            replaced = before is not None
            detail = f"{len(values)} values" + (", replacing the handle" if replaced else "")
            return Outcome(written, RC.SUCCESS, None, detail)

        result = await self._write(handle, decide, who, "CREATE")
        if result.ok:  # statistics reported upward (registry/statistics.py)
            if not replaced:
                USAGE.registered(handle)
        else:
            USAGE.refused(handle)
        return WriteResult(result.code, result.message, result.changed, handle, replaced)

    # --- delete ------------------------------------------------------------------------

    async def delete(self, handle: str, who: Identity) -> WriteResult:
        try:
            await self._check_target(handle, who, "DELETE")
        except Refusal as exc:
            return WriteResult.refused(exc, handle)
        parent = prefix_of(handle).rpartition(".")[0]
        if is_prefix_handle(handle) and parent:
            # A derived prefix is removed by its parent prefix's admins.
            admins = await self.permissions.prefix_admins(parent + "/")
            groups = await self.permissions.load_groups(admins)

            def drop_prefix(before: bytes | None) -> Outcome:
                _existing(handle, before)
                self.permissions.require(
                    who, admins, AP.DELETE_DERIVED_PREFIX, "delete this derived prefix", groups
                )
                return Outcome(None, RC.SUCCESS)

            return await self._write(handle, drop_prefix, who, "DELETE")
        prefix_admins, groups = await self.permissions.context_for(handle)

        def drop(before: bytes | None) -> Outcome:
            current = _existing(handle, before)
            self.permissions.require(
                who,
                admins_in(current) or prefix_admins,
                AP.DELETE_HANDLE,
                "delete this handle",
                groups,
            )
            return Outcome(None, RC.SUCCESS)

        return await self._write(handle, drop, who, "DELETE")

    # --- value changes -----------------------------------------------------------------

    async def add_values(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool = False,
    ) -> WriteResult:
        def add(have: Values, given: tuple[HandleValue, ...], may: Check) -> str:
            for v in given:
                may(AP.ADD_ADMIN if v.type == TYPE_ADMIN else AP.ADD_VALUE, f"add a {v.type} value")
                if v.index in have and not overwrite:
                    raise Refusal(RC.VALUE_ALREADY_EXISTS, f"index {v.index} already exists")
                have[v.index] = v
            return f"indexes {sorted(v.index for v in given)}"

        return await self._change(handle, who, "ADD_VALUE", values, add)

    async def put_values(
        self, handle: str, values: tuple[HandleValue, ...], who: Identity
    ) -> WriteResult:
        """Add or replace the given values in one transaction (REST PUT with ?index=):
        an existing index needs MODIFY_VALUE (MODIFY_ADMIN for HS_ADMIN), a new one
        ADD_VALUE (ADD_ADMIN)."""

        def put(have: Values, given: tuple[HandleValue, ...], may: Check) -> str:
            for v in given:
                old = have.get(v.index)
                admin = TYPE_ADMIN in (v.type, old.type if old else "")
                if old is None:
                    perm = AP.ADD_ADMIN if admin else AP.ADD_VALUE
                else:
                    perm = AP.MODIFY_ADMIN if admin else AP.MODIFY_VALUE
                may(perm, f"write the value at index {v.index}")
                have[v.index] = v
            return f"indexes {sorted(v.index for v in given)}"

        return await self._change(handle, who, "PUT_VALUES", values, put)

    async def modify_values(
        self, handle: str, values: tuple[HandleValue, ...], who: Identity
    ) -> WriteResult:
        def modify(have: Values, given: tuple[HandleValue, ...], may: Check) -> str:
            for v in given:
                old = have.get(v.index)
                if old is None:
                    raise Refusal(RC.VALUES_NOT_FOUND, f"no value at index {v.index}")
                admin_change = TYPE_ADMIN in (v.type, old.type)
                may(
                    AP.MODIFY_ADMIN if admin_change else AP.MODIFY_VALUE,
                    f"modify the value at index {v.index}",
                )
                have[v.index] = v
            return f"indexes {sorted(v.index for v in given)}"

        return await self._change(handle, who, "MODIFY_VALUE", values, modify)

    async def remove_values(
        self, handle: str, indexes: tuple[int, ...], who: Identity
    ) -> WriteResult:
        def remove(have: Values, _: tuple[HandleValue, ...], may: Check) -> str:
            for i in indexes:
                old = have.get(i)
                if old is None:
                    raise Refusal(RC.VALUES_NOT_FOUND, f"no value at index {i}")
                may(
                    AP.REMOVE_ADMIN if old.type == TYPE_ADMIN else AP.REMOVE_VALUE,
                    f"remove the value at index {i}",
                )
                del have[i]
            return f"indexes {sorted(indexes)}"

        return await self._change(handle, who, "REMOVE_VALUE", None, remove)

    async def _change(
        self,
        handle: str,
        who: Identity,
        op: str,
        incoming: tuple[HandleValue, ...] | None,
        apply: Apply,
    ) -> WriteResult:
        """A value change of an existing handle: ``apply`` edits its values by index
        (checking each with ``may``) and says what it did; then the template is checked
        against the result. ``incoming`` values are validated and stamped first."""
        try:
            prefix_admins, groups, templates, read = await self._context(handle, who, op)
            given = decode_values(prepare(incoming, self.sealer)) if incoming is not None else ()
        except Refusal as exc:
            return WriteResult.refused(exc, handle)

        def decide(before: bytes | None) -> Outcome:
            current = _existing(handle, before)
            admins = admins_in(current) or prefix_admins

            def may(permission: int, what: str) -> None:
                self.permissions.require(who, admins, permission, what, groups)

            have = {v.index: v for v in current}
            detail = apply(have, given, may)
            check_values(have.values(), templates)
            return Outcome(encode_sorted(have.values()), RC.SUCCESS, None, detail)

        return await self._write(handle, decide, who, op, read)

    # --- what every write shares -------------------------------------------------------

    async def _write(
        self,
        handle: str,
        decide: Decide,
        who: Identity,
        op: str,
        read: bytes | Unread | None = UNREAD,
    ) -> WriteResult:
        """Run ``decide`` atomically in the store (from ``read``, the handle as the
        checks' read found it, when given); tell the caches before answering."""
        try:
            o = await self.store.mutate(handle, decide, actor=str(who), op=op, read=read)
        except Refusal as exc:
            return WriteResult.refused(exc, handle)
        except BaseException:
            # Failed, or its outcome unknown (CommitUnknown; the request cancelled while
            # its statement ran): it may have committed, so the caches are told all the
            # same, in a task of its own that a cancellation does not stop (telling them
            # of an unchanged handle costs a refill, a stale value served for an hour
            # costs more).
            task = asyncio.get_running_loop().create_task(self.changed([handle]))
            self._telling.add(task)
            task.add_done_callback(self._telling.discard)
            raise
        changed = o.new is not KEEP
        if changed:
            await self.changed([handle])
        return WriteResult(o.rc, changed=changed and o.rc == RC.SUCCESS, handle=handle)

    async def changed(self, handles: list[str]) -> None:
        """Tell the caches of committed changes. Never raises: the write is committed, and
        a failure after commit must not be reported as the write's (the node's resolver
        records every change in the registry's change feed and catches up from it)."""
        if self.on_change is None:
            return
        try:
            await self.on_change(handles)
        except Exception:
            log.exception("committed change of %d handles not passed to the caches", len(handles))

    async def _check_target(self, handle: str, who: Identity, op: str) -> None:
        """Refuse (and audit) a handle that is not well formed or not homed here."""
        try:
            check_handle(handle)
        except InvalidName as exc:
            await self.audit.refused(who, op, handle, Refusal(RC.INVALID_HANDLE, str(exc)))
            raise Refusal(RC.INVALID_HANDLE, str(exc)) from None
        if not self.authority.serves(handle):
            refusal = Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
            await self.audit.refused(who, op, handle, refusal)
            raise refusal
        suspended = self.suspensions.refusal(handle) if self.suspensions else None
        if suspended is not None:
            await self.audit.refused(who, op, handle, suspended)
            raise suspended
        elsewhere = self.site.refusal(handle) if self.site is not None else None
        if elsewhere is not None:
            refusal = Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, elsewhere)
            await self.audit.refused(who, op, handle, refusal)
            raise refusal

    async def _context(
        self, handle: str, who: Identity, op: str
    ) -> tuple[list[AdminRecord], Groups, dict[str, Template], bytes | None]:
        """What a value change of an existing handle checks against, read before its
        transaction: the target is valid and homed here; the prefix admins, the HS_VLIST
        groups they name, the templates the handle may use, and the handle's values as
        that read found them (the write starts from them)."""
        await self._check_target(handle, who, op)
        # One read of the handle and its prefix handles (and of any group handle not
        # among them), not three: what a REST PUT ?index= pays before its transaction.
        seen: dict[str, bytes | None] = {}
        prefix_admins, groups = await self.permissions.context_for(handle, seen=seen)
        templates = await self.templates.for_handle(handle)
        return prefix_admins, groups, templates, seen.get(self.store.key(handle))

    async def reserve(self, handle: str, n: int) -> Reservation | None:
        """Reserve ``n`` registrations under the handle's prefix (None: no quota); the
        caller settles it with ``self.quotas.settle`` whatever its write does."""
        if self.quotas is None:
            return None
        prefix = storage_prefix(handle)
        if prefix.upper() == NA_PREFIX[:-1].upper():
            return None  # prefix handles are delegations, not registrations
        return await self.quotas.reserve(prefix, n, self.store.count_prefix)
