"""Who may do what: HS_ADMIN records, HS_VLIST groups and server administrators.

A handle's own HS_ADMIN values govern it; a handle without any is governed by the
admins of its nearest prefix handle (``0.NA/88.166.1001``, else ``0.NA/88.166``, ...).
An admin record names a key (``300:0.NA/88.166``), a whole handle (index 0) or an
HS_VLIST group, whose members may be groups again (followed GROUP_DEPTH levels).
Server administrators, from the node's configuration, may do everything.
Checks that run inside a write's transaction take their admins and groups pre-loaded,
so the transaction itself reads nothing more; ``context_for`` pre-loads them for a write
of one handle with one read of the handle and its prefix handles (plus one per group
level whose handles that read did not return).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    Permission,
    ProtocolError,
    ResponseCode,
    decode_admin,
    decode_values,
)
from idnode.resolver.codec.codes import TYPE_ADMIN, TYPE_VLIST
from idnode.resolver.codec.vlist import decode_vlist

from .auth import Identity
from .names import NA_PREFIX, normalize, prefix_of
from .store import Refusal, Store

if TYPE_CHECKING:
    from .delegations import Delegations

GROUP_DEPTH = 3  # HS_VLIST groups of groups, followed this deep
Key = tuple[str, int]  # a key as the registry compares it: (normalised handle, index)
Groups = dict[Key, list[Key]]

AP = AdminPermission


def same_value(a: HandleValue, b: HandleValue) -> bool:
    return dataclasses.replace(a, timestamp=0) == dataclasses.replace(b, timestamp=0)


def replace_permissions(current: Iterable[HandleValue], new: Iterable[HandleValue]) -> int:
    """The HS_ADMIN permissions that replacing ``current`` by ``new`` needs, value by value
    (the reference's HandleServer.getPermsAndSetTimestampsForCreationWithOverwrite)."""
    old = {v.index: v for v in current}
    fresh = {v.index: v for v in new}
    needed = 0
    for index, was in old.items():
        if index not in fresh:
            needed |= AP.REMOVE_ADMIN if was.type == TYPE_ADMIN else AP.REMOVE_VALUE
    for index, v in fresh.items():
        before = old.get(index)
        if before is None:
            needed |= AP.ADD_ADMIN if v.type == TYPE_ADMIN else AP.ADD_VALUE
        elif not same_value(before, v):
            needed |= _change_permissions(before, v)
    return needed


def _change_permissions(was: HandleValue, now: HandleValue) -> int:
    if was.type == TYPE_ADMIN:
        return AP.MODIFY_ADMIN if now.type == TYPE_ADMIN else AP.REMOVE_ADMIN | AP.MODIFY_VALUE
    if now.type == TYPE_ADMIN:
        return AP.MODIFY_VALUE | AP.ADD_ADMIN
    if was.permissions & Permission.PUBLIC_WRITE:
        return 0  # anyone may write it
    return AP.MODIFY_VALUE


def admins_in(values: Iterable[HandleValue]) -> list[AdminRecord]:
    """The admin records among a handle's values."""
    out = []
    for v in values:
        if v.type == TYPE_ADMIN:
            try:
                out.append(decode_admin(v.data))
            except ProtocolError:
                continue  # a broken HS_ADMIN grants nothing
    return out


def _in_group(me: Key, group: Key, groups: Groups) -> bool:
    seen, todo = set(), [group]
    while todo:
        g = todo.pop()
        if g in seen:
            continue
        seen.add(g)
        for member in groups.get(g, ()):
            if member[0] == me[0] and member[1] in (0, me[1]):
                return True
            todo.append(member)
    return False


class Permissions:
    def __init__(self, store: Store, server_admins: Iterable[Identity] = ()) -> None:
        self.store = store
        self.case_sensitive = store.case_sensitive
        # A set of keys, not identities: the configuration may spell a handle in any case.
        self.server_admins = {self.key(i) for i in server_admins}
        # The node's delegated prefixes (registry/delegations.py), when it serves.
        self.delegations: Delegations | None = None

    def key(self, who: Identity) -> Key:
        return normalize(who.handle, self.case_sensitive), who.index

    def same_identity(self, a: Identity, b: Identity) -> bool:
        """Do two keys name the same value (handles compared as the registry does)?"""
        return self.key(a) == self.key(b)

    def is_server_admin(self, who: Identity) -> bool:
        return self.key(who) in self.server_admins

    # --- checks (no I/O: admins and groups come pre-loaded) -------------------------

    def require(
        self,
        who: Identity,
        admins: list[AdminRecord],
        permission: int,
        what: str,
        groups: Groups | None = None,
    ) -> None:
        """Refuse unless an admin record with ``permission`` names ``who``, directly or
        through an HS_VLIST group (``groups``: members by (handle, index), pre-loaded)."""
        if self.is_server_admin(who):
            return
        me = self.key(who)
        for a in admins:
            if not a.permissions & permission:
                continue
            target = (normalize(a.admin_handle, self.case_sensitive), a.admin_index)
            if target[0] == me[0] and target[1] in (0, me[1]):
                return
            if groups and _in_group(me, target, groups):
                return
        raise Refusal(
            ResponseCode.INSUFFICIENT_PERMISSIONS,
            f"{who} may not {what} ({AdminPermission(permission).name} is needed)",
        )

    def require_all(
        self,
        who: Identity,
        admins: list[AdminRecord],
        permissions: int,
        what: str,
        groups: Groups,
    ) -> None:
        """Like require, but one admin record must grant every bit of ``permissions``
        (the reference's adminHasPermission with several operations)."""
        if self.is_server_admin(who):
            return
        me = self.key(who)
        for a in admins:
            if a.permissions & permissions != permissions:
                continue
            target = (normalize(a.admin_handle, self.case_sensitive), a.admin_index)
            if target[0] == me[0] and target[1] in (0, me[1]):
                return
            if _in_group(me, target, groups):
                return
        names = ", ".join(p.name or "" for p in AdminPermission(permissions))
        raise Refusal(
            ResponseCode.INSUFFICIENT_PERMISSIONS, f"{who} may not {what} ({names} is needed)"
        )

    def granted(
        self, who: Identity, admins: list[AdminRecord], permissions: int, groups: Groups
    ) -> bool:
        try:
            self.require_all(who, admins, permissions, "", groups)
        except Refusal:
            return False
        return True

    def may_replace(
        self,
        who: Identity,
        current: tuple[HandleValue, ...],
        new: tuple[HandleValue, ...],
        prefix_admins: list[AdminRecord],
        create_permission: int,
        groups: Groups,
    ) -> None:
        """May ``who`` replace an existing handle's values with ``new``? As the reference
        server decides (HandleServer.doCreateHandle): one admin record of the handle granting
        every permission the change needs (unless it adds an HS_ADMIN), or ADD_ADMIN, or else
        DELETE_HANDLE on the handle together with the right to create it afresh."""
        admins = admins_in(current) or prefix_admins
        needed = replace_permissions(current, new)
        if not needed:
            return
        if not needed & AP.ADD_ADMIN and self.granted(who, admins, needed, groups):
            return
        if self.granted(who, admins, AP.ADD_ADMIN, groups):
            return
        self.require_all(who, admins, AP.DELETE_HANDLE, "replace this handle", groups)
        self.require(who, prefix_admins, create_permission, "create handles here", groups)

    # --- what the checks need, read from the store --------------------------------------

    async def may_read_restricted(self, handle: str, values_wire: bytes, who: Identity) -> bool:
        """May ``who`` read this handle's values that are not PUBLIC_READ (AUTHORIZED_READ)?"""
        if self.is_server_admin(who):
            return True
        admins = admins_in(decode_values(values_wire)) or await self.prefix_admins(handle)
        try:
            self.require(
                who,
                admins,
                AP.AUTHORIZED_READ,
                "read restricted values",
                await self.load_groups(admins),
            )
        except Refusal:
            return False
        return True

    async def prefix_admins(self, handle: str) -> list[AdminRecord]:
        """HS_ADMIN of the nearest existing prefix handle: ``0.NA/88.166.1001``, else
        ``0.NA/88.166``, ... A parent prefix's admins govern a derived prefix until that
        prefix has its own handle (then only its admins, and server admins, do)."""
        if self._delegated(handle):
            return []
        candidates = self._prefix_handles(handle)
        return self._nearest_admins(candidates, await self.store.get_many(candidates))

    def _prefix_handles(self, handle: str) -> list[str]:
        """The keys of the prefix handles whose HS_ADMIN may govern ``handle``, nearest
        first: 0.NA/88.166.1001, 0.NA/88.166, 0.NA/88."""
        prefix = prefix_of(handle)
        candidates = []
        while prefix:
            candidates.append(normalize(NA_PREFIX + prefix, self.case_sensitive))
            prefix = prefix.rpartition(".")[0]
        return candidates

    @staticmethod
    def _nearest_admins(
        candidates: list[str], found: Mapping[str, bytes | None]
    ) -> list[AdminRecord]:
        for key in candidates:
            vals = found.get(key)
            if vals is not None:
                return admins_in(decode_values(vals))
        return []

    async def context_for(
        self,
        handle: str,
        admins_of: str | None = None,
        seen: dict[str, bytes | None] | None = None,
    ) -> tuple[list[AdminRecord], Groups]:
        """``(prefix_admins, groups_for(handle, prefix_admins))``, read together: the handle
        and its prefix handles in one ``get_many``, then only the group handles that read
        did not return (a prefix admin usually names a key of the prefix handle itself, so
        a value write's checks cost one round trip). ``admins_of``: whose prefix admins
        govern, as ``prefix_admins(admins_of)``; ``handle`` when None, none when "" (a
        top-level prefix handle: only server admins and its own HS_ADMIN govern it).
        ``seen`` gets what the read found, by key (None: not there), the handle's own
        values among them: the write may start from them (Store.mutate's ``read``)."""
        if admins_of is None:
            admins_of = handle
        key = normalize(handle, self.case_sensitive)
        candidates = (
            self._prefix_handles(admins_of) if admins_of and not self._delegated(admins_of) else []
        )
        wanted = list(dict.fromkeys([key, *candidates]))  # a prefix handle is its own candidate
        found = await self.store.get_many(wanted)
        read: dict[str, bytes | None] = {k: found.get(k) for k in wanted}
        if seen is not None:
            seen.update(read)
        prefix_admins = self._nearest_admins(candidates, read)
        vals = read[key]
        own = admins_in(decode_values(vals)) if vals else []
        return prefix_admins, await self.load_groups(own + prefix_admins, read)

    async def admins_by_prefix(
        self, handles: Sequence[str], who: Identity
    ) -> dict[str, list[AdminRecord]]:
        """Prefix admins for every prefix of a batch, in one query (server admins need none)."""
        if self.is_server_admin(who):
            return {}
        chains: dict[str, list[str]] = {}
        for h in handles:
            prefix = normalize(prefix_of(h), self.case_sensitive)
            if prefix in chains:
                continue
            if self._delegated(h):
                chains[prefix] = []
                continue
            chain, p = [], prefix
            while p:
                chain.append(normalize(NA_PREFIX + p, self.case_sensitive))
                p = p.rpartition(".")[0]
            chains[prefix] = chain
        found = await self.store.get_many(sorted({k for c in chains.values() for k in c}))
        decoded: dict[str, list[AdminRecord]] = {}  # many prefixes share an ancestor
        out: dict[str, list[AdminRecord]] = {}
        for prefix, chain in chains.items():
            nearest = next((k for k in chain if k in found), None)
            if nearest is None:
                out[prefix] = []
                continue
            if nearest not in decoded:
                decoded[nearest] = admins_in(decode_values(found[nearest]))
            out[prefix] = decoded[nearest]
        return out

    def _delegated(self, handle: str) -> bool:
        """A handle (not a prefix handle) under a prefix delegated to another node: that
        node registers it, so no prefix admin here governs it (only server admins, and
        an existing handle's own HS_ADMIN). The admin a top-level node gives a secondary
        node in ``0.NA/88.166`` may so write that record and create ``0.NA/88.166.*``
        (ADD_DERIVED_PREFIX of its parent's admins), never ``88.166/...`` here."""
        if handle.endswith("/"):  # "88.166/": a prefix's admins asked for, not a handle
            return False
        return self.delegations is not None and self.delegations.delegated(handle)

    async def load_groups(
        self, admins: list[AdminRecord], read: Mapping[str, bytes | None] | None = None
    ) -> Groups:
        """HS_VLIST groups named by admin records, followed up to GROUP_DEPTH levels.
        ``read``: value lists already read by key (None: no such handle), not read again;
        nor is a handle read twice while the groups are followed."""
        groups: Groups = {}
        known: dict[str, bytes | None] = dict(read) if read else {}
        frontier = list(
            dict.fromkeys(
                (normalize(a.admin_handle, self.case_sensitive), a.admin_index) for a in admins
            )
        )
        for _ in range(GROUP_DEPTH):
            frontier = [f for f in frontier if f not in groups]
            if not frontier:
                break
            missing = sorted({h for h, _ in frontier} - known.keys())
            if missing:
                found = await self.store.get_many(missing)
                known.update((h, found.get(h)) for h in missing)
            following: list[Key] = []
            for handle, index in frontier:
                vals = known[handle]
                if vals is None:
                    continue
                for v in decode_values(vals):
                    if v.index == index and v.type == TYPE_VLIST:
                        try:
                            members = [
                                (normalize(r.handle, self.case_sensitive), r.index)
                                for r in decode_vlist(v.data)
                            ]
                        except ProtocolError:
                            continue  # a broken list grants nothing
                        groups[(handle, index)] = members
                        following += members
            frontier = following
        return groups

    async def groups_for(self, handle: str, prefix_admins: list[AdminRecord]) -> Groups:
        """Groups any admin of ``handle`` (its own HS_ADMIN now, or its prefix's) may name."""
        key = normalize(handle, self.case_sensitive)
        vals = (await self.store.get_many([key])).get(key)
        own = admins_in(decode_values(vals)) if vals else []
        return await self.load_groups(own + prefix_admins, {key: vals})

    async def require_of_prefix(
        self, who: Identity, prefix: str, permission: int, what: str
    ) -> None:
        """Refuse unless the admins of ``prefix`` (its prefix handle's) grant ``permission``."""
        admins = await self.prefix_admins(prefix + "/")
        self.require(who, admins, permission, what, await self.load_groups(admins))
