"""The prefix lifecycle (the SNMS workflow): an enterprise applies for a prefix under one
this node homes, an operator (a server administrator) approves or rejects it, and may
later suspend and resume it. Every decision is audited.

Approval creates the prefix as ``grant-prefix`` does (``0.NA/<prefix>`` with HS_ADMIN for
``300:0.NA/<prefix>`` and the applicant's key), then either homes it here with this
node's HS_SITE ("hosted") or writes the enterprise node's HS_SITE into its record (a
delegation, registry/delegations.py). When the node has an upward configuration, the
new prefix is registered at the node above; a failure leaves the approval done and the
registration queued (``upward = 'queued'``), retried with backoff until it succeeds.

A suspended prefix's handles answer RC 605 (PREFIX_LIMIT, the IDIS code for a prefix
that may not be served; REST maps it to 403) with "prefix P is suspended", and writes
under it are refused with the same. :class:`Suspensions` is the per-worker set the
resolver's suspension stage and the write path consult; it is rebuilt on every worker
when ``0.NA/<prefix>`` is invalidated (which a suspension does) and on the node's
prefix-refresh timer.

The upward call itself lives in the resolver (resolver/upstream/register.py: a Handle
client); the node hands it in as :attr:`PrefixApplications.upward`.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from idnode.resolver.codec import (
    ProtocolError,
    ResponseCode,
    SiteInfo,
    decode_admin,
    decode_site,
    decode_values,
)

from .audit_trail import AuditTrail
from .auth import Identity
from .bootstrap import create_prefix_admin, public_key_data, publish_site, site_update
from .names import NA_PREFIX, InvalidName, PrefixAuthority, check_prefix, normalize, prefix_of
from .permissions import Permissions
from .sealing import Sealer
from .store import KEEP, ApplicationRow, Outcome, Refusal, Store

log = logging.getLogger("idnode.prefixes")

RC = ResponseCode
SUSPENDED_RC = RC.PREFIX_LIMIT
HOSTED, DELEGATED = "hosted", "delegated"
MAX_CONTACT = 4096  # bytes of contact details (JSON)
MAX_PENDING = 1000  # applications waiting for an operator, in all (anyone may apply)
MAX_PENDING_PER_SOURCE = 5  # of them from one client address
PENDING_DAYS = 30  # a pending application older than this is rejected as expired
LIST_LIMIT = 100  # applications per page of a listing (newest first)
UPWARD_LEASE = 60.0  # a claimed upward registration is retried after this if its worker died

OnChange = Callable[[list[str]], Awaitable[None]]
# (prefix, the site to register for it, this node's own site)
RegisterUpward = Callable[[str, SiteInfo, SiteInfo | None], Awaitable[str]]


def suspended_message(prefix: str) -> str:
    return f"prefix {prefix} is suspended"


class Suspensions:
    """This worker's suspended prefixes: a handle under one (or under a prefix derived
    from one) is refused."""

    def __init__(self, case_sensitive: bool = False) -> None:
        self.case_sensitive = case_sensitive
        self._map: dict[str, str] = {}  # normalised prefix -> as suspended

    def __bool__(self) -> bool:
        return bool(self._map)

    @property
    def prefixes(self) -> list[str]:
        return sorted(self._map.values())

    def replace(self, rows: Iterable[tuple[str, str]]) -> bool:
        """Whether the set changed."""
        new = {normalize(p, self.case_sensitive): p for p, _ in rows}
        changed = new != self._map
        self._map = new
        return changed

    def of(self, handle: str) -> str | None:
        """The suspended prefix ``handle`` is under (its own for ``0.NA/<p>``), if any."""
        if not self._map:
            return None
        p = normalize(prefix_of(handle), self.case_sensitive)
        while p:
            found = self._map.get(p)
            if found is not None:
                return found
            p = p.rpartition(".")[0]
        return None

    def refusal(self, handle: str) -> Refusal | None:
        p = self.of(handle)
        return None if p is None else Refusal(SUSPENDED_RC, suspended_message(p))


def application_json(a: ApplicationRow, existing: bytes | None = None) -> dict[str, Any]:
    """An application as operators see it (never the key itself); with ``existing``, the
    record ``0.NA/<prefix>`` holds here already (an application for a prefix that exists
    is refused: the operator sees whose it is)."""
    try:
        contact: Any = json.loads(a.contact) if a.contact else {}
    except ValueError:
        contact = a.contact
    out = _application_fields(a, contact)
    if existing is not None:
        from idnode.resolver.codec.jsonform import value_to_json

        try:
            out["existingRecord"] = [value_to_json(v) for v in decode_values(existing)]
        except ProtocolError as exc:
            out["existingRecord"] = f"undecodable: {exc.reason}"
    return out


def _application_fields(a: ApplicationRow, contact: Any) -> dict[str, Any]:
    return {
        "id": a.id,
        "prefix": a.prefix,
        "mode": a.mode,
        "status": a.status,
        "adminKey": a.admin_kind,
        "admin": f"300:{NA_PREFIX}{a.prefix}",
        "contact": contact,
        "applicant": a.applicant,
        "reason": a.reason,
        "decidedBy": a.decided_by,
        "createdAt": a.created_at,
        "decidedAt": a.decided_at or None,
        "upward": a.upward or "not configured",
        "upwardError": a.upward_error,
        "upwardAttempts": a.upward_attempts,
    }


class PrefixApplications:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        permissions: Permissions,
        audit: AuditTrail,
        *,
        sealer: Sealer | None = None,
        on_change: OnChange | None = None,
    ) -> None:
        self.store = store
        self.authority = authority
        self.permissions = permissions
        self.audit = audit
        self.sealer = sealer
        self.on_change = on_change
        self.suspensions = Suspensions(store.case_sensitive)
        # Set by the node: its own HS_SITE (published for a hosted prefix) and how to
        # register a prefix at the node above (None: no upward configuration).
        self.site: Callable[[], SiteInfo | None] = lambda: None  # the current one, when asked
        self.upward: RegisterUpward | None = None
        self.retry_max = 300.0  # longest wait between upward attempts, seconds

    # --- applying ---------------------------------------------------------------------

    async def apply(
        self,
        prefix: str,
        *,
        secret: bytes | None = None,
        pubkey: bytes | None = None,
        site: bytes | None = None,
        hosted: bool = False,
        contact: Any = None,
        applicant: str = "",
        source: str = "",
    ) -> ApplicationRow:
        """Record an application (anyone may apply; an operator decides). ``source`` is
        the client's address: at most MAX_PENDING_PER_SOURCE pending from one. Raises
        Refusal when it cannot be accepted."""
        try:
            check_prefix(prefix)
        except InvalidName as exc:
            raise Refusal(RC.INVALID_HANDLE, str(exc)) from None
        if not self.authority.is_homed(prefix):
            homed = ", ".join(sorted(self.authority.homed)) or "none"
            raise Refusal(
                RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE,
                f"{prefix} is not under a prefix this node homes ({homed})",
            )
        await self._check_free(prefix)
        if (secret is None) == (pubkey is None):
            raise Refusal(RC.INVALID_VALUE, "give the administrator's secret or public key")
        if secret is not None:
            if not secret:
                raise Refusal(RC.INVALID_VALUE, "the administrator's secret is empty")
            if self.sealer is None:
                raise Refusal(RC.ERROR, "this node has no node key to keep a secret with")
            kind, key = "secret", self.sealer.seal(secret)
        else:
            try:
                kind, key = "pubkey", public_key_data(pubkey or b"")
            except (ValueError, ProtocolError) as exc:
                raise Refusal(RC.INVALID_VALUE, f"the administrator's public key: {exc}") from None
        if hosted == (site is not None):
            raise Refusal(
                RC.INVALID_VALUE, "say either hosted here, or the enterprise node's HS_SITE"
            )
        if site is not None:
            try:
                if not decode_site(site).servers:
                    raise Refusal(RC.INVALID_VALUE, "the HS_SITE names no server")
            except ProtocolError as exc:
                raise Refusal(RC.INVALID_VALUE, f"not an HS_SITE: {exc.reason}") from None
        text = json.dumps(contact if contact is not None else {}, ensure_ascii=False)
        if len(text.encode()) > MAX_CONTACT:
            raise Refusal(RC.INVALID_VALUE, f"contact details over {MAX_CONTACT} bytes")
        mode = HOSTED if hosted else DELEGATED
        await self.expire()
        app_id = await self.store.add_prefix_application(
            prefix,
            mode,
            kind,
            key,
            site,
            text,
            applicant,
            max_pending=MAX_PENDING,
            source=source,
            max_per_source=MAX_PENDING_PER_SOURCE,
        )
        if app_id is None:
            raise Refusal(
                RC.HANDLE_ALREADY_EXISTS,
                f"{prefix} has an application pending or approved already (or "
                f"{MAX_PENDING_PER_SOURCE} applications from {source or 'this address'}, or "
                f"{MAX_PENDING} in all, wait for an operator)",
            )
        await self.audit.record(
            applicant or "anonymous", "PREFIX_APPLY", NA_PREFIX + prefix, RC.SUCCESS, f"{mode}"
        )
        row = await self.store.prefix_application(app_id)
        assert row is not None
        return row

    # --- the operator's decisions -----------------------------------------------------

    async def _operator(self, who: Identity, op: str, target: str) -> None:
        if not self.permissions.is_server_admin(who):
            exc = Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} is not a server administrator")
            await self.audit.refused(who, op, target, exc)
            raise exc

    async def expire(self) -> int:
        """Reject the pending applications older than PENDING_DAYS; how many."""
        cutoff = int(time.time()) - PENDING_DAYS * 86400
        return await self.store.expire_prefix_applications(
            cutoff, f"expired: pending over {PENDING_DAYS} days"
        )

    async def applications(
        self,
        who: Identity,
        status: str | None = None,
        *,
        limit: int = LIST_LIMIT,
        after: int | None = None,
    ) -> list[ApplicationRow]:
        """Newest first, ``limit`` of them; ``after``: those older than that id (the
        next page)."""
        await self._operator(who, "PREFIX_LIST", "/")
        await self.expire()
        limit = max(1, min(limit, LIST_LIMIT))
        return await self.store.prefix_applications(status, limit, after=after)

    async def existing(self, rows: Iterable[ApplicationRow]) -> dict[int, bytes]:
        """The record ``0.NA/<prefix>`` of each application whose prefix has one here."""
        keys = {a.id: self.store.key(NA_PREFIX + a.prefix) for a in rows}
        got = await self.store.get_many(sorted(set(keys.values())))
        return {i: got[k] for i, k in keys.items() if k in got}

    async def _check_free(self, prefix: str, ours: Callable[[bytes], bool] | None = None) -> None:
        """Refuse a prefix another party holds here: one homed, one whose ``0.NA/``
        record exists (unless ``ours`` says it is the one this application's earlier
        approval attempt wrote), one under a delegation or another record's prefix (an
        ancestor, below the prefix this node homes, with its own record), one under a
        suspended prefix."""
        norm = normalize(prefix, self.store.case_sensitive)
        homed = {normalize(p, self.store.case_sensitive) for p in self.authority.homed}
        ancestors = []
        p = prefix
        while "." in p:
            p = p.rpartition(".")[0]
            ancestors.append(p)
        keys = [self.store.key(NA_PREFIX + x) for x in (prefix, *ancestors)]
        got = await self.store.get_many(keys)
        own = got.get(keys[0])
        mine = own is not None and ours is not None and ours(own)
        if norm in homed and not mine:
            raise Refusal(RC.HANDLE_ALREADY_EXISTS, f"{prefix} is homed on this node already")
        if own is not None and not mine:
            raise Refusal(
                RC.HANDLE_ALREADY_EXISTS,
                f"{NA_PREFIX}{prefix} exists on this node already (another party's prefix "
                "or delegation: see existingRecord)",
            )
        for a, k in zip(ancestors, keys[1:], strict=True):
            if normalize(a, self.store.case_sensitive) in homed:
                break
            if k in got:
                raise Refusal(
                    RC.HANDLE_ALREADY_EXISTS,
                    f"{prefix} is under {a}, which has its own record here (delegated "
                    f"elsewhere or granted): prefixes under it are its administrator's",
                )
        held = Suspensions(self.store.case_sensitive)
        held.replace(await self.store.suspended_prefixes())
        suspended = held.of(NA_PREFIX + prefix)
        if suspended is not None:
            raise Refusal(SUSPENDED_RC, f"{prefix}: {suspended_message(suspended)}")

    def _written_by(self, row: ApplicationRow, secret: bytes | None) -> Callable[[bytes], bool]:
        """Whether a record holds this application's administrator (HS_ADMIN for
        ``300:0.NA/<prefix>`` and its key at 300): an earlier attempt to approve it."""

        def ours(record: bytes) -> bool:
            try:
                values = {v.index: v for v in decode_values(record)}
                if row.mode == DELEGATED and row.site is not None:
                    site: SiteInfo | None = decode_site(row.site)
                else:
                    site = self.site()
                for v in values.values():  # nothing an approval does not write
                    if v.index in (100, 200, 300):
                        continue
                    if v.type != "HS_SITE" or site is None or decode_site(v.data) != site:
                        return False
                admin, key = values.get(100), values.get(300)
                if admin is None or key is None or admin.type != "HS_ADMIN":
                    return False
                named = decode_admin(admin.data)
                if (named.admin_index, named.admin_handle.upper()) != (
                    300,
                    (NA_PREFIX + row.prefix).upper(),
                ):
                    return False
                if row.admin_kind == "pubkey":
                    return key.type == "HS_PUBKEY" and key.data == row.admin_key
                if secret is None or self.sealer is None or key.type != "HS_SECKEY":
                    return False
                return hmac.compare_digest(self.sealer.unseal(key.data), secret)
            except Exception:
                return False

        return ours

    async def get(self, who: Identity, app_id: int) -> ApplicationRow:
        await self._operator(who, "PREFIX_GET", "/")
        return await self._pending_or_not(app_id, pending=False)

    async def _pending_or_not(self, app_id: int, *, pending: bool = True) -> ApplicationRow:
        row = await self.store.prefix_application(app_id)
        if row is None:
            raise Refusal(RC.HANDLE_NOT_FOUND, f"no application {app_id}")
        if pending and row.status != "pending":
            raise Refusal(RC.HANDLE_ALREADY_EXISTS, f"application {app_id} is {row.status}")
        return row

    async def approve(self, who: Identity, app_id: int, reason: str = "") -> ApplicationRow:
        await self._operator(who, "PREFIX_APPROVE", f"application {app_id}")
        row = await self._pending_or_not(app_id)
        handle = NA_PREFIX + row.prefix
        # Made first, decided after: each write is idempotent, so two operators approving
        # at once write the same values and one decision is recorded; a failure here
        # leaves the application pending, to approve again.
        secret = None
        if row.admin_kind == "secret":
            if self.sealer is None:
                raise Refusal(RC.ERROR, "this node has no node key to open the secret with")
            secret = self.sealer.unseal(row.admin_key)
        try:  # again: the prefix may have been created, delegated or suspended since
            await self._check_free(row.prefix, self._written_by(row, secret))
        except Refusal as exc:
            await self.audit.refused(who, "PREFIX_APPROVE", handle, exc)
            raise
        wrote = False
        try:
            wrote = True  # from here on, the caches hear of it whatever happens
            await create_prefix_admin(
                self.store,
                row.prefix,
                sealer=self.sealer,
                secret=secret,
                pubkey_pem=row.admin_key if row.admin_kind == "pubkey" else None,
            )
            if row.mode == HOSTED:
                await self.store.home_prefix(row.prefix, row.applicant)
                self.authority.replace(await self.store.homed_prefixes())
                site = self.site()
                if site is not None:
                    await publish_site(self.store, row.prefix, site, actor=str(who))
            else:
                await self._delegate(row, who)
            upward = "queued" if self.upward is not None else ""
            if not await self.store.decide_prefix_application(
                app_id, "approved", str(who), reason, upward
            ):
                raise Refusal(
                    RC.HANDLE_ALREADY_EXISTS, f"application {app_id} was decided meanwhile"
                )
            await self.audit.record(
                who, "PREFIX_APPROVE", handle, RC.SUCCESS, f"application {app_id}, {row.mode}"
            )
        finally:
            if wrote:
                await self._changed(handle)
        if self.upward is not None:
            fresh = await self.store.prefix_application(app_id)
            if fresh is not None:
                await self._register_upward(fresh)
        done = await self.store.prefix_application(app_id)
        assert done is not None
        return done

    async def _delegate(self, row: ApplicationRow, who: Identity) -> None:
        assert row.site is not None
        site = decode_site(row.site)

        def fn(before: bytes | None) -> Outcome:
            new = site_update(before, site)
            if new is None:
                return Outcome(KEEP, RC.SUCCESS, None, "HS_SITE unchanged")
            return Outcome(new, RC.SUCCESS, None, "HS_SITE of the enterprise node (delegation)")

        await self.store.mutate(NA_PREFIX + row.prefix, fn, actor=str(who), op="DELEGATE")

    async def reject(self, who: Identity, app_id: int, reason: str) -> ApplicationRow:
        await self._operator(who, "PREFIX_REJECT", f"application {app_id}")
        if not reason.strip():
            raise Refusal(RC.INVALID_VALUE, "a rejection needs a reason")
        row = await self._pending_or_not(app_id)
        if not await self.store.decide_prefix_application(app_id, "rejected", str(who), reason):
            raise Refusal(RC.HANDLE_ALREADY_EXISTS, f"application {app_id} was decided meanwhile")
        await self.audit.record(
            who, "PREFIX_REJECT", NA_PREFIX + row.prefix, RC.SUCCESS, f"{app_id}: {reason}"
        )
        done = await self.store.prefix_application(app_id)
        assert done is not None
        return done

    # --- suspension -------------------------------------------------------------------

    async def suspend(self, who: Identity, prefix: str, reason: str = "") -> bool:
        await self._operator(who, "PREFIX_SUSPEND", NA_PREFIX + prefix)
        try:
            check_prefix(prefix)
        except InvalidName as exc:
            raise Refusal(RC.INVALID_HANDLE, str(exc)) from None
        if not self.authority.is_homed(prefix):
            raise Refusal(
                RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, f"{prefix} is not served by this node"
            )
        done = await self.store.suspend_prefix(prefix, reason, str(who))
        await self.audit.record(
            who, "PREFIX_SUSPEND", NA_PREFIX + prefix, RC.SUCCESS, reason or "suspended"
        )
        await self._changed(NA_PREFIX + prefix)
        return done

    async def resume(self, who: Identity, prefix: str) -> bool:
        await self._operator(who, "PREFIX_RESUME", NA_PREFIX + prefix)
        done = await self.store.resume_prefix(prefix)
        if not done:
            raise Refusal(RC.HANDLE_NOT_FOUND, f"{prefix} is not suspended")
        await self.audit.record(who, "PREFIX_RESUME", NA_PREFIX + prefix, RC.SUCCESS, "resumed")
        await self._changed(NA_PREFIX + prefix)
        return done

    async def suspended(self, who: Identity) -> list[tuple[str, str]]:
        await self._operator(who, "PREFIX_LIST", "/")
        return await self.store.suspended_prefixes()

    async def reload_suspensions(self) -> bool:
        """Read the suspended prefixes; whether the set changed (raises if the registry
        cannot be read)."""
        return self.suspensions.replace(await self.store.suspended_prefixes())

    async def _changed(self, handle: str) -> None:
        # Every worker (and node) reloads its delegations and suspensions when a 0.NA/
        # key is invalidated, and drops what its caches hold; this worker before answering.
        if self.on_change is None:
            await self.reload_suspensions()
            return
        try:
            await self.on_change([normalize(handle, self.store.case_sensitive)])
        except Exception:
            log.exception("a prefix change of %s not passed to the caches", handle)

    # --- upward registration ----------------------------------------------------------

    def _upward_site(self, row: ApplicationRow) -> SiteInfo | None:
        if row.mode == DELEGATED and row.site is not None:
            return decode_site(row.site)
        return self.site()

    async def _register_upward(self, row: ApplicationRow) -> bool:
        """One attempt; the outcome recorded in the application. Never raises."""
        attempts = row.upward_attempts + 1
        site = self._upward_site(row)
        try:
            if self.upward is None or site is None:
                raise RuntimeError("no upward configuration or no site to register")
            did = await self.upward(row.prefix, site, self.site())
        except Exception as exc:
            wait = min(self.retry_max, 2.0 ** min(attempts, 16))
            log.warning(
                "upward registration of %s failed (attempt %d, next in %.0fs): %s",
                row.prefix,
                attempts,
                wait,
                exc,
            )
            await self.store.set_prefix_upward(
                row.id, "queued", str(exc)[:500], attempts, time.time() + wait
            )
            return False
        log.info("upward registration of %s: %s", row.prefix, did)
        await self.store.set_prefix_upward(row.id, "registered", "", attempts, 0.0)
        await self.audit.record("node", "PREFIX_UPWARD", NA_PREFIX + row.prefix, RC.SUCCESS, did)
        return True

    async def retry_upward(self) -> int:
        """Queued upward registrations that are due, each tried once; how many succeeded."""
        if self.upward is None:
            return 0
        rows = await self.store.claim_prefix_upward(time.time(), UPWARD_LEASE)
        done = 0
        for row in rows:
            done += await self._register_upward(row)
        return done
