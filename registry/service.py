"""The registry service: every write, from any front door, goes through here.

validate (handle syntax, value limits and typed data) → authorise (HS_ADMIN of the
handle, else of its prefix handle ``0.NA/<prefix>``; server admins from the
configuration) → write in one transaction with its audit row → notify (the node
invalidates Redis and every worker's L1 before the caller hears "done").
Refusals leave nothing but their audit row.
"""

from __future__ import annotations

import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, ParamSpec

from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    CreateHandleResponse,
    Empty,
    HandleValue,
    ListResponse,
    OpFlag,
    Permission,
    ProtocolError,
    ResponseCode,
    decode_admin,
    decode_public_key,
    decode_site,
    decode_values,
    encode_values,
)
from idnode.resolver.codec import bodies as b
from idnode.resolver.codec.codes import (
    MAX_VALUES,
    NOT_HOMED_MESSAGE,
    SITE_TYPES,
    TYPE_ADMIN,
    TYPE_PUBKEY,
    TYPE_SECKEY,
    TYPE_VLIST,
)
from idnode.resolver.codec.message import Message
from idnode.resolver.codec.vlist import decode_vlist

from .auth import AuthError, Identity
from .names import (
    NA_PREFIX,
    InvalidName,
    PrefixAuthority,
    check_handle,
    normalize,
    prefix_of,
    storage_prefix,
)
from .quotas import Quotas
from .sealing import Sealer, SecretError
from .store import KEEP, AuditEntry, HandleRecord, Outcome, Refusal, Store, now
from .templates import (
    TEMPLATE_INDEX,
    TEMPLATE_TYPE,
    Template,
    TemplateError,
    check_successor,
    parse_template,
)

TEMPLATE_CACHE_SECONDS = 30.0

MAX_BATCH = 2000
GROUP_DEPTH = 3  # HS_VLIST groups of groups, followed this deep
Groups = dict[tuple[str, int], list[tuple[str, int]]]

Result = tuple[int, b.Body]
P = ParamSpec("P")
MINT_ATTEMPTS = 4


def answers_refusals(
    fn: Callable[P, Awaitable[Result]],
) -> Callable[P, Awaitable[Result]]:
    """An operation's refusal becomes its result: (response code, error message)."""

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> Result:
        try:
            return await fn(*args, **kwargs)
        except Refusal as exc:
            return exc.rc, b.ErrorResponse(exc.message)

    return wrapper


OnChange = Callable[[list[str]], Awaitable[None]]

RC = ResponseCode
AP = AdminPermission


@dataclasses.dataclass(frozen=True, slots=True)
class Created:
    """What a create did: its result, the handle (as minted), whether it replaced one."""

    rc: int
    body: b.Body
    handle: str
    replaced: bool = False


def mint_handle(stem: str) -> str:
    """The reference's minted handle (HandleSuffixMinter): the stem as given, then a random
    version-4 UUID in lower case, e.g. 88.166/DOC-1b4e28ba-2fa1-41d2-883f-0016d3cca427.
    A bare prefix ("88.166") gets its "/" first rather than becoming part of the suffix."""
    if "/" not in stem:
        stem += "/"
    return stem + str(uuid.uuid4())


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


class RegistryService:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        *,
        sealer: Sealer | None = None,
        server_admins: Iterable[Identity] = (),
        on_change: OnChange | None = None,
        quotas: Quotas | None = None,
    ) -> None:
        self.quotas = quotas
        self.store = store
        self.authority = authority
        self.sealer = sealer
        self.case_sensitive = store.case_sensitive
        self.server_admins = {self._ident_key(i) for i in server_admins}
        self.on_change = on_change
        self._templates: dict[str, tuple[float, dict[str, Template]]] = {}

    def _ident_key(self, i: Identity) -> tuple[str, int]:
        return normalize(i.handle, self.case_sensitive), i.index

    def same_identity(self, a: Identity, b: Identity) -> bool:
        """Do two keys name the same value (handles compared as the registry does)?"""
        return self._ident_key(a) == self._ident_key(b)

    def is_server_admin(self, who: Identity) -> bool:
        return self._ident_key(who) in self.server_admins

    # --- keys ---------------------------------------------------------------------

    async def key_for(self, who: Identity, auth_type: str) -> bytes:
        """The key material an answer must prove: a raw secret, or HS_PUBKEY data."""
        rows = await self.store.get_many([normalize(who.handle, self.case_sensitive)])
        vals = rows.get(normalize(who.handle, self.case_sensitive))
        if vals is None:
            raise AuthError(f"key handle {who.handle} does not exist")
        for v in decode_values(vals):
            if v.index != who.index:
                continue
            if auth_type == "HS_SECKEY" and v.type == TYPE_SECKEY:
                if self.sealer is None:
                    raise AuthError("this node has no key to open HS_SECKEY values")
                try:
                    return self.sealer.unseal(v.data)
                except SecretError as exc:
                    raise AuthError(str(exc)) from None
            if auth_type == "HS_PUBKEY" and v.type == TYPE_PUBKEY:
                return v.data
            raise AuthError(f"{who} is a {v.type} value, not {auth_type}")
        raise AuthError(f"{who} does not exist")

    async def audit_failed_login(self, who: Identity, request: Message, reason: str) -> None:
        target = getattr(request.body, "handle", "") or getattr(request.body, "user_handle", "")
        await self.store.append_audit(
            AuditEntry(
                now(),
                str(who),
                "AUTHENTICATE",
                normalize(target, self.case_sensitive),
                RC.AUTHENTICATION_FAILED,
                detail=reason,
            )
        )

    async def may_read_restricted(self, handle: str, values_wire: bytes, who: Identity) -> bool:
        """May ``who`` read this handle's values that are not PUBLIC_READ (AUTHORIZED_READ)?"""
        if self.is_server_admin(who):
            return True
        admins = self._admins_in(decode_values(values_wire)) or await self._prefix_admins(handle)
        try:
            self._require(
                who,
                admins,
                AP.AUTHORIZED_READ,
                "read restricted values",
                await self._load_groups(admins),
            )
        except Refusal:
            return False
        return True

    # --- dispatch -------------------------------------------------------------------

    async def execute(self, m: Message, who: Identity) -> Result:
        body = m.body
        overwrite = m.has(OpFlag.OVRW)
        try:
            if isinstance(body, b.CreateHandleRequest):
                return await self.create(
                    body.handle, body.values, who, overwrite=overwrite, mint=m.has(OpFlag.MINT)
                )
            if isinstance(body, b.DeleteHandleRequest):
                return await self.delete(body.handle, who)
            if isinstance(body, b.AddValueRequest):
                return await self.add_values(body.handle, body.values, who, overwrite=overwrite)
            if isinstance(body, b.ModifyValueRequest):
                return await self.modify_values(body.handle, body.values, who)
            if isinstance(body, b.RemoveValueRequest):
                return await self.remove_values(body.handle, body.indexes, who)
            if isinstance(body, b.ListHandlesRequest):
                return await self.list_handles(body.handle, who)
            if isinstance(body, b.HomeNaRequest):
                return await self.home(body.handle, who)
            if isinstance(body, b.UnhomeNaRequest):
                return await self.unhome(body.handle, who)
            if isinstance(body, b.ListHomedNasRequest):
                return await self.list_homed(who)
        except Refusal as exc:
            return exc.rc, b.ErrorResponse(exc.message)
        return RC.OPERATION_NOT_SUPPORTED, b.ErrorResponse("operation not supported")

    # --- writes ------------------------------------------------------------------------

    async def create(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool = False,
        mint: bool = False,
    ) -> Result:
        c = await self.create_handle(handle, values, who, overwrite=overwrite, mint=mint)
        return c.rc, c.body

    async def create_handle(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool = False,
        mint: bool = False,
    ) -> Created:
        """Create ``handle``, or replace it when ``overwrite``; say which happened.

        With ``mint``, ``handle`` is a stem ("88.166/" or "88.166/DOC-") and the handle
        is the stem followed by a random UUID, as the reference server's
        HandleSuffixMinter does. A minted handle is always new: it never overwrites.
        """
        if not mint:
            return await self._create_one(handle, values, who, overwrite=overwrite, minted=False)
        created = Created(RC.ERROR, b.ErrorResponse("no handle minted"), handle)
        for _ in range(MINT_ATTEMPTS):  # a UUID collision is a retry, never a failure
            minted = mint_handle(handle)
            created = await self._create_one(minted, values, who, overwrite=False, minted=True)
            if created.rc != RC.HANDLE_ALREADY_EXISTS:
                break
        return created

    async def _create_one(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool,
        minted: bool,
    ) -> Created:
        try:
            await self._check_target(handle, who, "CREATE")
            new = self._prepare(values)
        except Refusal as exc:
            return Created(exc.rc, b.ErrorResponse(exc.message), handle)
        templates = await self.templates_for(handle)
        is_prefix_handle = handle[:5].upper() == NA_PREFIX.upper()
        room = await self._room(handle)
        if is_prefix_handle:
            parent = prefix_of(handle).rpartition(".")[0]
            admins = await self._prefix_admins(parent + "/") if parent else []
            needed = AP.ADD_DERIVED_PREFIX
        else:
            admins = await self._prefix_admins(handle)
            needed = AP.ADD_HANDLE
        if overwrite:  # the handle's own HS_ADMIN may name groups too
            groups = await self._groups_for(handle, admins)
        else:
            groups = await self._load_groups(admins)
        replaced = False

        def fn(before: bytes | None) -> Outcome:
            nonlocal replaced
            if before is not None and not overwrite:
                raise Refusal(RC.HANDLE_ALREADY_EXISTS, f"{handle} already exists")
            written = new
            if before is None:
                self._require(who, admins, needed, "create handles here", groups)
            else:
                written = self._keep_unchanged_timestamps(decode_values(before), new)
                self._may_replace(who, decode_values(before), written, admins, needed, groups)
            self._check_template(values, templates)
            if before is None and room is not None and room < 1:
                raise Refusal(
                    RC.REGISTER_COUNT_LIMIT,
                    f"prefix {prefix_of(handle)} has reached its registration quota",
                )
            replaced = before is not None
            body: b.Body = CreateHandleResponse(handle) if minted else Empty()
            detail = f"{len(values)} values" + (", replacing the handle" if replaced else "")
            return Outcome(written, RC.SUCCESS, body, detail)

        try:
            rc, body = await self._write(handle, fn, who, "CREATE")
        except Refusal as exc:
            return Created(exc.rc, b.ErrorResponse(exc.message), handle)
        if rc == RC.SUCCESS and not replaced and self.quotas is not None:
            self.quotas.used(storage_prefix(handle), 1)
        return Created(rc, body, handle, replaced)

    def _may_replace(
        self,
        who: Identity,
        current: tuple[HandleValue, ...],
        new: bytes,
        prefix_admins: list[AdminRecord],
        create_permission: int,
        groups: Groups,
    ) -> None:
        """May ``who`` replace an existing handle's values with ``new``? As the reference
        server decides (HandleServer.doCreateHandle): one admin record of the handle granting
        every permission the change needs (unless it adds an HS_ADMIN), or ADD_ADMIN, or else
        DELETE_HANDLE on the handle together with the right to create it afresh."""
        admins = self._admins_in(current) or prefix_admins
        needed = replace_permissions(current, decode_values(new))
        if not needed:
            return
        if not needed & AP.ADD_ADMIN and self._granted(who, admins, needed, groups):
            return
        if self._granted(who, admins, AP.ADD_ADMIN, groups):
            return
        self._require_all(who, admins, AP.DELETE_HANDLE, "replace this handle", groups)
        self._require(who, prefix_admins, create_permission, "create handles here", groups)

    def _granted(
        self, who: Identity, admins: list[AdminRecord], permissions: int, groups: Groups
    ) -> bool:
        try:
            self._require_all(who, admins, permissions, "", groups)
        except Refusal:
            return False
        return True

    def _require_all(
        self,
        who: Identity,
        admins: list[AdminRecord],
        permissions: int,
        what: str,
        groups: Groups,
    ) -> None:
        """Like _require, but one admin record must grant every bit of ``permissions``
        (the reference's adminHasPermission with several operations)."""
        if self.is_server_admin(who):
            return
        me = self._ident_key(who)
        for a in admins:
            if a.permissions & permissions != permissions:
                continue
            target = (normalize(a.admin_handle, self.case_sensitive), a.admin_index)
            if target[0] == me[0] and target[1] in (0, me[1]):
                return
            if self._in_group(me, target, groups):
                return
        names = ", ".join(p.name or "" for p in AdminPermission(permissions))
        raise Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} may not {what} ({names} is needed)")

    def _keep_unchanged_timestamps(self, current: tuple[HandleValue, ...], new: bytes) -> bytes:
        """A replaced handle's unchanged values keep their timestamps, as in the reference."""
        old = {v.index: v for v in current}
        kept = []
        for v in decode_values(new):
            was = old.get(v.index)
            if was is not None and same_value(was, v):
                v = dataclasses.replace(v, timestamp=was.timestamp)
            kept.append(v)
        return self._encode(kept)

    @answers_refusals
    async def delete(self, handle: str, who: Identity) -> Result:
        await self._check_target(handle, who, "DELETE")
        parent = prefix_of(handle).rpartition(".")[0]
        if handle[:5].upper() == NA_PREFIX.upper() and parent:
            # A derived prefix is removed by its parent prefix's admins.
            admins = await self._prefix_admins(parent + "/")
            needed, what = AP.DELETE_DERIVED_PREFIX, "delete this derived prefix"
            groups = await self._load_groups(admins)

            def drop_prefix(before: bytes | None) -> Outcome:
                self._existing(handle, before)
                self._require(who, admins, needed, what, groups)
                return Outcome(None, RC.SUCCESS, Empty())

            return await self._write(handle, drop_prefix, who, "DELETE")
        prefix_admins = await self._prefix_admins(handle)
        groups = await self._groups_for(handle, prefix_admins)

        def fn(before: bytes | None) -> Outcome:
            current = self._existing(handle, before)
            self._require(
                who,
                self._admins_in(current) or prefix_admins,
                AP.DELETE_HANDLE,
                "delete this handle",
                groups,
            )
            return Outcome(None, RC.SUCCESS, Empty())

        return await self._write(handle, fn, who, "DELETE")

    @answers_refusals
    async def add_values(
        self,
        handle: str,
        values: tuple[HandleValue, ...],
        who: Identity,
        *,
        overwrite: bool = False,
    ) -> Result:
        prefix_admins, groups, templates = await self._write_context(handle, who, "ADD_VALUE")
        added = decode_values(self._prepare(values))

        def fn(before: bytes | None) -> Outcome:
            current = self._existing(handle, before)
            admins = self._admins_in(current) or prefix_admins
            have = {v.index: v for v in current}
            for v in added:
                self._require(
                    who,
                    admins,
                    AP.ADD_ADMIN if v.type == TYPE_ADMIN else AP.ADD_VALUE,
                    f"add a {v.type} value",
                    groups,
                )
                if v.index in have and not overwrite:
                    raise Refusal(RC.VALUE_ALREADY_EXISTS, f"index {v.index} already exists")
                have[v.index] = v
            self._check_template(have.values(), templates)
            return self._changed(have, f"indexes {sorted(v.index for v in added)}")

        return await self._write(handle, fn, who, "ADD_VALUE")

    @answers_refusals
    async def put_values(
        self, handle: str, values: tuple[HandleValue, ...], who: Identity
    ) -> Result:
        """Add or replace the given values in one transaction (REST PUT with ?index=):
        an existing index needs MODIFY_VALUE (MODIFY_ADMIN for HS_ADMIN), a new one
        ADD_VALUE (ADD_ADMIN)."""
        prefix_admins, groups, templates = await self._write_context(handle, who, "PUT_VALUES")
        given = decode_values(self._prepare(values))

        def fn(before: bytes | None) -> Outcome:
            current = self._existing(handle, before)
            admins = self._admins_in(current) or prefix_admins
            have = {v.index: v for v in current}
            for v in given:
                old = have.get(v.index)
                admin = TYPE_ADMIN in (v.type, old.type if old else "")
                if old is None:
                    perm = AP.ADD_ADMIN if admin else AP.ADD_VALUE
                else:
                    perm = AP.MODIFY_ADMIN if admin else AP.MODIFY_VALUE
                self._require(who, admins, perm, f"write the value at index {v.index}", groups)
                have[v.index] = v
            self._check_template(have.values(), templates)
            return self._changed(have, f"indexes {sorted(v.index for v in given)}")

        return await self._write(handle, fn, who, "PUT_VALUES")

    async def check_password(self, who: Identity, secret: bytes) -> bool:
        """HTTP Basic authentication: is ``secret`` the HS_SECKEY at ``who``? Constant-time."""
        import hmac

        try:
            stored = await self.key_for(who, "HS_SECKEY")
        except AuthError:
            return False
        return hmac.compare_digest(stored, secret)

    @answers_refusals
    async def modify_values(
        self, handle: str, values: tuple[HandleValue, ...], who: Identity
    ) -> Result:
        prefix_admins, groups, templates = await self._write_context(handle, who, "MODIFY_VALUE")
        changed = decode_values(self._prepare(values))

        def fn(before: bytes | None) -> Outcome:
            current = self._existing(handle, before)
            admins = self._admins_in(current) or prefix_admins
            have = {v.index: v for v in current}
            for v in changed:
                old = have.get(v.index)
                if old is None:
                    raise Refusal(RC.VALUES_NOT_FOUND, f"no value at index {v.index}")
                admin_change = TYPE_ADMIN in (v.type, old.type)
                self._require(
                    who,
                    admins,
                    AP.MODIFY_ADMIN if admin_change else AP.MODIFY_VALUE,
                    f"modify the value at index {v.index}",
                    groups,
                )
                have[v.index] = v
            self._check_template(have.values(), templates)
            return self._changed(have, f"indexes {sorted(v.index for v in changed)}")

        return await self._write(handle, fn, who, "MODIFY_VALUE")

    @answers_refusals
    async def remove_values(self, handle: str, indexes: tuple[int, ...], who: Identity) -> Result:
        prefix_admins, groups, templates = await self._write_context(handle, who, "REMOVE_VALUE")

        def fn(before: bytes | None) -> Outcome:
            current = self._existing(handle, before)
            admins = self._admins_in(current) or prefix_admins
            have = {v.index: v for v in current}
            for i in indexes:
                old = have.get(i)
                if old is None:
                    raise Refusal(RC.VALUES_NOT_FOUND, f"no value at index {i}")
                self._require(
                    who,
                    admins,
                    AP.REMOVE_ADMIN if old.type == TYPE_ADMIN else AP.REMOVE_VALUE,
                    f"remove the value at index {i}",
                    groups,
                )
                del have[i]
            self._check_template(have.values(), templates)
            return self._changed(have, f"indexes {sorted(indexes)}")

        return await self._write(handle, fn, who, "REMOVE_VALUE")

    # --- templates ----------------------------------------------------------------------

    @answers_refusals
    async def put_template(self, document: Any, who: Identity) -> Result:
        """Add a template version to a prefix (versions never change; items never vanish)."""
        try:
            t = parse_template(document)
        except TemplateError as exc:
            raise Refusal(RC.INVALID_VALUE, str(exc)) from None
        if not self.authority.is_homed(t.prefix):
            raise Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
        admins = await self._prefix_admins(t.prefix + "/")
        target = NA_PREFIX + t.prefix
        try:
            self._require(
                who,
                admins,
                AP.MODIFY_VALUE,
                "change this prefix's templates",
                await self._load_groups(admins),
            )
            existing = await self._prefix_templates(t.prefix, fresh=True)
            if t.version in existing:
                if existing[t.version] == t:
                    return RC.SUCCESS, Empty()  # the same version again: a safe retry
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
            await self._audit_refusal(who, "PUT_TEMPLATE", target, exc)
            raise
        if not await self.store.put_template(t.prefix, t.version, t.to_json(), str(who)):
            raise Refusal(RC.VALUE_ALREADY_EXISTS, f"template version {t.version} exists")
        self._templates.pop(normalize(t.prefix, self.case_sensitive), None)
        await self.store.append_audit(
            AuditEntry(
                now(),
                str(who),
                "PUT_TEMPLATE",
                normalize(target, self.case_sensitive),
                RC.SUCCESS,
                detail=f"version {t.version}",
            )
        )
        return RC.SUCCESS, Empty()

    async def _prefix_templates(self, prefix: str, fresh: bool = False) -> dict[str, Template]:
        key = normalize(prefix, self.case_sensitive)
        cached = self._templates.get(key)
        if cached is not None and not fresh and cached[0] > time.monotonic():
            return cached[1]
        found = {v: Template.from_json(doc) for v, doc in await self.store.templates(prefix)}
        self._templates[key] = (time.monotonic() + TEMPLATE_CACHE_SECONDS, found)
        return found

    async def templates_for(self, handle: str) -> dict[str, Template]:
        """Template versions a handle may name: its prefix's, else its ancestors' (nearest wins)."""
        out: dict[str, Template] = {}
        p = prefix_of(handle)
        while p:
            for version, t in (await self._prefix_templates(p)).items():
                out.setdefault(version, t)
            p = p.rpartition(".")[0]
        return out

    @staticmethod
    def _check_template(values: Iterable[HandleValue], templates: dict[str, Template]) -> None:
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

    # --- batches ------------------------------------------------------------------------

    async def batch_create(
        self,
        items: Sequence[tuple[str, tuple[HandleValue, ...]]],
        who: Identity,
        *,
        replace: bool = False,
    ) -> list[tuple[str, int, str]]:
        """Create up to MAX_BATCH handles: (handle, response code, message) per item, in order.

        One bad record never stops the others: each is validated and authorised on its
        own; the good ones are written in one statement and one transaction. A record
        that exists with the same values succeeds again (retries are safe); with other
        values it is a conflict (101) unless ``replace`` (server administrators only).
        """
        if len(items) > MAX_BATCH:
            raise Refusal(RC.INVALID_VALUE, f"{len(items)} records: at most {MAX_BATCH} a batch")
        if replace and not self.is_server_admin(who):
            raise Refusal(RC.INSUFFICIENT_PERMISSIONS, "only server administrators may replace")
        results: list[tuple[str, int, str] | None] = [None] * len(items)
        admins_by_prefix = await self._admins_by_prefix([h for h, _ in items], who)
        distinct = {id(admins): admins for admins in admins_by_prefix.values()}
        batch_groups = await self._load_groups([a for admins in distinct.values() for a in admins])
        good: list[tuple[int, HandleRecord]] = []
        seen: dict[str, int] = {}
        rooms: dict[str, int | None] = {}
        templates_by_prefix: dict[str, dict[str, Template]] = {}
        refused: list[AuditEntry] = []
        for i, (handle, values) in enumerate(items):
            try:
                check_handle(handle)
                if not self.authority.serves(handle):
                    raise Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
                prefix = normalize(prefix_of(handle), self.case_sensitive)
                self._require(
                    who,
                    admins_by_prefix.get(prefix, []),
                    AP.ADD_HANDLE,
                    "create handles here",
                    batch_groups,
                )
                vals = self._prepare(values)
                if any(v.index == TEMPLATE_INDEX for v in values):
                    p_key = prefix_of(handle)
                    if p_key not in templates_by_prefix:
                        templates_by_prefix[p_key] = await self.templates_for(handle)
                    self._check_template(values, templates_by_prefix[p_key])
                key = normalize(handle, self.case_sensitive)
                if key in seen:
                    raise Refusal(
                        RC.HANDLE_ALREADY_EXISTS, f"also record {seen[key] + 1} of this batch"
                    )
                if self.quotas is not None:
                    p = storage_prefix(handle)
                    if p not in rooms:
                        rooms[p] = await self._room(handle)
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
                results[i] = (handle, rc, msg)
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
            outcome = await self.store.create_many(
                [r for _, r in good], actor=str(who), op="BATCH_CREATE", replace=replace
            )
            changed = []
            for i, rec in good:
                rc, msg = outcome[normalize(rec.handle, self.case_sensitive)]
                results[i] = (rec.handle, rc, msg)
                if rc == RC.SUCCESS and msg != "already registered with these values":
                    changed.append(rec.handle)
                    if self.quotas is not None:
                        self.quotas.used(storage_prefix(rec.handle), 1)
            if changed and self.on_change is not None:
                await self.on_change(changed)
        return [r for r in results if r is not None]

    # --- reads and prefixes ----------------------------------------------------------

    @answers_refusals
    async def list_handles(self, prefix_handle: str, who: Identity) -> Result:
        prefix = prefix_of(prefix_handle)
        if not self.authority.is_homed(prefix):
            return RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, b.ErrorResponse(NOT_HOMED_MESSAGE)
        admins = await self._prefix_admins(prefix + "/")
        try:
            self._require(
                who,
                admins,
                AP.LIST_HANDLES,
                "list handles under this prefix",
                await self._load_groups(admins),
            )
        except Refusal as exc:
            await self._audit_refusal(who, "LIST_HANDLES", prefix_handle, exc)
            raise
        return RC.SUCCESS, ListResponse(tuple(await self.store.list_handles(prefix)))

    @answers_refusals
    async def home(self, prefix_handle: str, who: Identity) -> Result:
        prefix = prefix_of(prefix_handle)
        await self._server_admin_only(who, "HOME_NA", prefix_handle)
        await self.store.home_prefix(prefix, str(who))
        self.authority.replace([*self.authority.homed, prefix])
        await self.store.append_audit(
            AuditEntry(now(), str(who), "HOME_NA", normalize(prefix_handle), RC.SUCCESS)
        )
        return RC.SUCCESS, Empty()

    @answers_refusals
    async def unhome(self, prefix_handle: str, who: Identity) -> Result:
        prefix = prefix_of(prefix_handle)
        await self._server_admin_only(who, "UNHOME_NA", prefix_handle)
        if not await self.store.unhome_prefix(prefix):
            return RC.HANDLE_NOT_FOUND, b.ErrorResponse(f"{prefix} is not homed here")
        self.authority.replace(await self.store.homed_prefixes())
        await self.store.append_audit(
            AuditEntry(now(), str(who), "UNHOME_NA", normalize(prefix_handle), RC.SUCCESS)
        )
        return RC.SUCCESS, Empty()

    @answers_refusals
    async def list_homed(self, who: Identity) -> Result:
        await self._server_admin_only(who, "LIST_HOMED_NAS", "/")
        homed = await self.store.homed_prefixes()
        return RC.SUCCESS, ListResponse(tuple(NA_PREFIX + p for p in sorted(homed)))

    # --- helpers -------------------------------------------------------------------------

    async def _write(
        self, handle: str, fn: Callable[[bytes | None], Outcome], who: Identity, op: str
    ) -> Result:
        o = await self.store.mutate(handle, fn, actor=str(who), op=op)
        if o.new is not KEEP and self.on_change is not None:
            await self.on_change([handle])
        return o.rc, o.result

    async def _check_target(self, handle: str, who: Identity, op: str) -> None:
        try:
            check_handle(handle)
        except InvalidName as exc:
            await self._audit_refusal(who, op, handle, Refusal(RC.INVALID_HANDLE, str(exc)))
            raise Refusal(RC.INVALID_HANDLE, str(exc)) from None
        if not self.authority.serves(handle):
            refusal = Refusal(RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, NOT_HOMED_MESSAGE)
            await self._audit_refusal(who, op, handle, refusal)
            raise refusal

    async def _audit_refusal(self, who: Identity, op: str, handle: str, exc: Refusal) -> None:
        await self.store.append_audit(
            AuditEntry(
                now(),
                str(who),
                op,
                normalize(handle, self.case_sensitive),
                exc.rc,
                detail=exc.message,
            )
        )

    async def _server_admin_only(self, who: Identity, op: str, target: str) -> None:
        if not self.is_server_admin(who):
            exc = Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} is not a server administrator")
            await self._audit_refusal(who, op, target, exc)
            raise exc

    async def _write_context(
        self, handle: str, who: Identity, op: str
    ) -> tuple[list[AdminRecord], Groups, dict[str, Template]]:
        """What a value change of an existing handle checks against, read before its
        transaction: the target is valid and homed here; the prefix admins, the HS_VLIST
        groups they name, and the templates the handle may use."""
        await self._check_target(handle, who, op)
        prefix_admins = await self._prefix_admins(handle)
        groups = await self._groups_for(handle, prefix_admins)
        return prefix_admins, groups, await self.templates_for(handle)

    async def _room(self, handle: str) -> int | None:
        if self.quotas is None:
            return None
        prefix = storage_prefix(handle)
        if prefix.upper() == NA_PREFIX[:-1].upper():
            return None  # prefix handles are delegations, not registrations
        return await self.quotas.room(prefix, self.store.count_prefix)

    async def _admins_by_prefix(
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
                decoded[nearest] = self._admins_in(decode_values(found[nearest]))
            out[prefix] = decoded[nearest]
        return out

    async def _prefix_admins(self, handle: str) -> list[AdminRecord]:
        """HS_ADMIN of the nearest existing prefix handle: ``0.NA/88.166.1001``, else
        ``0.NA/88.166``, ... A parent prefix's admins govern a derived prefix until that
        prefix has its own handle (then only its admins, and server admins, do)."""
        prefix = prefix_of(handle)
        candidates = []
        while prefix:
            candidates.append(normalize(NA_PREFIX + prefix, self.case_sensitive))
            prefix = prefix.rpartition(".")[0]
        found = await self.store.get_many(candidates)
        for key in candidates:
            if key in found:
                return self._admins_in(decode_values(found[key]))
        return []

    @staticmethod
    def _admins_in(values: Iterable[HandleValue]) -> list[AdminRecord]:
        out = []
        for v in values:
            if v.type == TYPE_ADMIN:
                try:
                    out.append(decode_admin(v.data))
                except ProtocolError:
                    continue  # a broken HS_ADMIN grants nothing
        return out

    def _require(
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
        me = self._ident_key(who)
        for a in admins:
            if not a.permissions & permission:
                continue
            target = (normalize(a.admin_handle, self.case_sensitive), a.admin_index)
            if target[0] == me[0] and target[1] in (0, me[1]):
                return
            if groups and self._in_group(me, target, groups):
                return
        raise Refusal(
            RC.INSUFFICIENT_PERMISSIONS,
            f"{who} may not {what} ({AdminPermission(permission).name} is needed)",
        )

    @staticmethod
    def _in_group(me: tuple[str, int], group: tuple[str, int], groups: Groups) -> bool:
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

    async def _load_groups(self, admins: list[AdminRecord]) -> Groups:
        """HS_VLIST groups named by admin records, followed up to GROUP_DEPTH levels."""
        groups: Groups = {}
        frontier = list(
            dict.fromkeys(
                (normalize(a.admin_handle, self.case_sensitive), a.admin_index) for a in admins
            )
        )
        for _ in range(GROUP_DEPTH):
            frontier = [f for f in frontier if f not in groups]
            if not frontier:
                break
            found = await self.store.get_many(sorted({h for h, _ in frontier}))
            following: list[tuple[str, int]] = []
            for handle, index in frontier:
                vals = found.get(handle)
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

    async def _groups_for(self, handle: str, prefix_admins: list[AdminRecord]) -> Groups:
        """Groups any admin of ``handle`` (its own HS_ADMIN now, or its prefix's) may name."""
        key = normalize(handle, self.case_sensitive)
        vals = (await self.store.get_many([key])).get(key)
        own = self._admins_in(decode_values(vals)) if vals else []
        return await self._load_groups(own + prefix_admins)

    @staticmethod
    def _existing(handle: str, before: bytes | None) -> tuple[HandleValue, ...]:
        if before is None:
            raise Refusal(RC.HANDLE_NOT_FOUND, f"{handle} does not exist")
        return decode_values(before)

    def _changed(self, have: dict[int, HandleValue], detail: str) -> Outcome:
        """The outcome of a value change: the new list, in index order."""
        return Outcome(self._encode(have.values()), RC.SUCCESS, Empty(), detail)

    def _encode(self, values: Iterable[HandleValue]) -> bytes:
        return encode_values(sorted(values, key=lambda v: v.index))

    def _prepare(self, values: tuple[HandleValue, ...]) -> bytes:
        """Validate incoming values; stamp them; seal secrets. Refusal(202) says which is bad."""
        if len(values) > MAX_VALUES:
            raise Refusal(RC.INVALID_VALUE, f"{len(values)} values is over {MAX_VALUES}")
        seen: set[int] = set()
        out = []
        t = int(time.time())
        for v in values:
            if v.index <= 0:
                raise Refusal(RC.INVALID_VALUE, f"index {v.index} is not positive")
            if v.index in seen:
                raise Refusal(RC.INVALID_VALUE, f"index {v.index} appears twice")
            seen.add(v.index)
            if v.permissions > 0x0F:
                raise Refusal(RC.INVALID_VALUE, f"index {v.index}: permissions {v.permissions:#x}")
            data = v.data
            try:
                if v.type == TYPE_ADMIN:
                    decode_admin(data)
                elif v.type in SITE_TYPES:
                    decode_site(data)
                elif v.type == TYPE_VLIST:
                    decode_vlist(data)
                elif v.type == TYPE_PUBKEY:
                    decode_public_key(data)
            except ProtocolError as exc:
                raise Refusal(
                    RC.INVALID_VALUE, f"index {v.index} ({v.type}): {exc.reason}"
                ) from None
            perms = v.permissions
            if v.type == TYPE_SECKEY:
                if self.sealer is None:
                    raise Refusal(RC.INVALID_VALUE, "this node has no key to seal HS_SECKEY values")
                data = self.sealer.seal(data)
                perms &= ~(Permission.PUBLIC_READ | Permission.PUBLIC_WRITE)
            out.append(
                HandleValue(v.index, v.type, data, v.ttl, v.ttl_type, t, perms, v.references)
            )
        return self._encode(out)
