"""Per-prefix statistics, reported upward (issue 13): registrations, resolutions and
errors per homed prefix per UTC day, sent to the top-level node on a schedule, queued
and retried, never lost or double-counted across a restart; at a top-level node, the
reports its children send, kept and served.

Counting (:class:`UsageTally`, one per worker process: ``USAGE``): the doors and the
write path add one to a plain dict keyed by the handle's prefix text, where they already
count their metrics (no lock, no await, no I/O: the UDP fast path counts too). Each
worker flushes it into the registry every ``statistics_flush`` seconds (and at a UTC
midnight, and at graceful shutdown) with one upsert statement adding to the (prefix,
day) rows of ``statistics`` (:func:`flush`). Prefixes are mapped to the longest homed
prefix at the flush; counts for what is not homed here are dropped. A kill -9 loses at
most the counts of the last unflushed interval of each worker; a flush that fails is
kept in memory and added to the next (a flush whose COMMIT outcome is unknown is
dropped: never counted twice, at worst counted short).

Reporting: a row of ``statistics`` is its own outbox entry. Every flush that adds to it
bumps its ``seq``; ``sent_seq`` is the last ``seq`` the node above acknowledged. A
report carries the row's *cumulative* counts for that day with its ``seq`` and this
registry's id (``statistics_source``, made once by migration 0012), and the top keeps,
per (reporting registry, prefix, day), the snapshot with the highest ``seq``
(:meth:`Statistics.receive`). A resend - after a lost acknowledgement, a kill -9
between the top recording a report and this node marking it sent, a lease that ran
out - carries the same or a larger snapshot and replaces, never adds: exactly once by
construction, whatever the order reports arrive in. (Reporting only closed days as
increments would need a per-report id table at the top and would still have to
re-count a day that was reported and then grew.)

The sending side (claim with a lease, the authenticated POST, backoff, metrics) is
resolver/upstream/reporting.py; the REST endpoints are resolver/rest_statistics_door.py.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from idnode.resolver.codec import ResponseCode, decode_values
from idnode.resolver.codec.codes import AdminPermission

from .auth import Identity
from .names import NA_PREFIX, InvalidName, PrefixAuthority, check_prefix, normalize
from .permissions import Permissions, admins_in
from .store import CommitUnknown, ReceivedRow, Refusal, StatisticsRow, Store

log = logging.getLogger("idnode.statistics")

RC = ResponseCode
MAX_KEYS = 10_000  # distinct prefix texts one worker keeps between flushes
MAX_REPORTS = 1000  # reports in one POST
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_OK = frozenset({int(RC.SUCCESS), int(RC.SERVICE_REFERRAL), int(RC.PREFIX_REFERRAL)})


def utc_day(at: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(time.time() if at is None else at))


def seconds_to_midnight(at: float | None = None) -> float:
    now = time.time() if at is None else at
    return 86400.0 - (now % 86400.0)


def prefix_text(handle: str) -> str:
    """The prefix a handle counts under, as cheaply as it can be had: the text before
    its first "/", or for ``0.NA/<p>`` (a prefix lookup) ``p``."""
    head, _, rest = handle.partition("/")
    if rest and head.upper() == "0.NA":
        return rest
    return head


class UsageTally:
    """One worker's counts since its last flush: plain dicts keyed by prefix text."""

    def __init__(self) -> None:
        self.day = utc_day()
        self.registrations: dict[str, int] = {}
        self.resolutions: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        # Set by the node: maps a prefix text to the homed prefix it counts under (None:
        # not homed). Used only when MAX_KEYS distinct texts are held (junk lookups).
        self.homed_of: Any = None

    def _add(self, d: dict[str, int], prefix: str, n: int = 1) -> None:
        got = d.get(prefix)
        if got is None and len(d) >= MAX_KEYS:
            mapped = self.homed_of(prefix) if self.homed_of is not None else None
            if mapped is None:
                return  # not homed here: it would be dropped at the flush anyway
            prefix, got = mapped, d.get(mapped)
        d[prefix] = (got or 0) + n

    def resolved(self, handle: str, rc: int) -> None:
        """An answer to a resolution (any door): an error unless it is a success or a
        referral."""
        self.resolved_under(prefix_text(handle), rc)

    def resolved_under(self, p: str, rc: int) -> None:
        """:meth:`resolved` for a handle whose prefix text (:func:`prefix_text`) the
        caller already has."""
        got = self.resolutions.get(p)
        if got is None:
            self._add(self.resolutions, p)
        else:
            self.resolutions[p] = got + 1
        if rc not in _OK:
            self._add(self.errors, p)

    def registered(self, handle: str, n: int = 1) -> None:
        self._add(self.registrations, prefix_text(handle), n)

    def refused(self, handle: str) -> None:
        """A registration (create) answered with an error."""
        self._add(self.errors, prefix_text(handle))

    def take(self) -> tuple[str, dict[str, tuple[int, int, int]]]:
        """The counts so far and the day they belong to; the tally starts afresh."""
        day, reg, res, err = self.day, self.registrations, self.resolutions, self.errors
        self.day = utc_day()
        self.registrations, self.resolutions, self.errors = {}, {}, {}
        out: dict[str, tuple[int, int, int]] = {}
        for p in reg.keys() | res.keys() | err.keys():
            out[p] = (reg.get(p, 0), res.get(p, 0), err.get(p, 0))
        return day, out

    def give_back(self, day: str, counts: Mapping[str, tuple[int, int, int]]) -> None:
        """Counts a flush could not store, for the next flush (of the same day, or
        added to today's when the day has turned: counted late, never lost)."""
        del day
        for p, (g, r, e) in counts.items():
            if g:
                self.registrations[p] = self.registrations.get(p, 0) + g
            if r:
                self.resolutions[p] = self.resolutions.get(p, 0) + r
            if e:
                self.errors[p] = self.errors.get(p, 0) + e

    def __bool__(self) -> bool:
        return bool(self.registrations or self.resolutions or self.errors)


USAGE = UsageTally()


def homed_prefix(authority: PrefixAuthority, prefix: str) -> str | None:
    """The longest prefix homed here that ``prefix`` is (or is derived from)."""
    p = normalize(prefix, authority.case_sensitive)
    homed = authority.homed
    while p:
        if p in homed:
            return p
        p = p.rpartition(".")[0]
    return None


async def flush(store: Store, authority: PrefixAuthority, tally: UsageTally = USAGE) -> int:
    """Add a worker's counts to the registry in one statement; how many prefixes. On a
    failure the counts go back into the tally (unless the COMMIT's outcome is unknown:
    then they are dropped, as counting them twice is worse than once short)."""
    if not tally:
        return 0
    day, counts = tally.take()
    merged: dict[str, list[int]] = {}
    for p, c in counts.items():
        home = homed_prefix(authority, p)
        if home is None:
            continue
        m = merged.setdefault(home, [0, 0, 0])
        for i in range(3):
            m[i] += c[i]
    if not merged:
        return 0
    try:
        await store.add_statistics(day, [(p, g, r, e) for p, (g, r, e) in merged.items()])
    except CommitUnknown as exc:
        log.warning("statistics of %d prefixes may not have been stored (%s)", len(merged), exc)
        return 0
    except Exception:
        tally.give_back(day, {p: (m[0], m[1], m[2]) for p, m in merged.items()})
        raise
    return len(merged)


def report_json(row: StatisticsRow) -> dict[str, Any]:
    return {
        "prefix": row.prefix,
        "day": row.day,
        "seq": row.seq,
        "registrations": row.registrations,
        "resolutions": row.resolutions,
        "errors": row.errors,
    }


def local_json(row: StatisticsRow) -> dict[str, Any]:
    """This node's row with its report state (for its own operators)."""
    return {
        **report_json(row),
        "reportedSeq": row.sent_seq,
        "reported": row.sent_seq >= row.seq,
        "attempts": row.attempts,
        "error": row.error,
    }


def received_json(row: ReceivedRow) -> dict[str, Any]:
    return {
        "prefix": row.prefix,
        "day": row.day,
        "node": row.node,
        "sender": row.sender,
        "seq": row.seq,
        "registrations": row.registrations,
        "resolutions": row.resolutions,
        "errors": row.errors,
        "receivedAt": row.received_at,
    }


def totals(rows: Iterable[ReceivedRow]) -> list[dict[str, Any]]:
    """Per (prefix, day) sums over the reporting nodes (one per server of a site)."""
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        t = out.setdefault(
            (r.day, r.prefix),
            {"prefix": r.prefix, "day": r.day, "registrations": 0, "resolutions": 0, "errors": 0},
        )
        t["registrations"] += r.registrations
        t["resolutions"] += r.resolutions
        t["errors"] += r.errors
    return [out[k] for k in sorted(out)]


def _count(doc: Mapping[str, Any], name: str) -> int:
    v = doc.get(name)
    if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**62:
        raise ValueError(f"{name} must be a whole number from 0")
    return v


def parse_report(doc: Any) -> ReceivedRow:
    """One report as a child sends it (ValueError when it is not one)."""
    if not isinstance(doc, dict):
        raise ValueError("a report is an object")
    prefix, day = doc.get("prefix"), doc.get("day")
    if not isinstance(prefix, str):
        raise ValueError("prefix must be a string")
    try:
        check_prefix(prefix)
    except InvalidName as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(day, str) or not DAY.match(day):
        raise ValueError("day must be YYYY-MM-DD")
    seq = _count(doc, "seq")
    if seq < 1:
        raise ValueError("seq must be at least 1")
    return ReceivedRow(
        "",
        prefix,
        day,
        "",
        _count(doc, "registrations"),
        _count(doc, "resolutions"),
        _count(doc, "errors"),
        seq,
    )


class Statistics:
    """The top-level role: who may report for a prefix, keeping and serving reports."""

    def __init__(self, store: Store, authority: PrefixAuthority, permissions: Permissions) -> None:
        self.store = store
        self.authority = authority
        self.permissions = permissions

    async def may_report(self, who: Identity, prefix: str) -> None:
        """Refuse unless ``who`` administers ``prefix`` here: a server administrator, or
        an admin named (with MODIFY_VALUE) by the nearest ``0.NA/`` record on the
        prefix's chain that has HS_ADMIN values - the admin a ``grant-prefix`` made for
        ``0.NA/88.166`` reports for 88.166 and the prefixes under it, not for 88.200."""
        if self.permissions.is_server_admin(who):
            return
        if not self.authority.is_homed(prefix):
            raise Refusal(
                RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, f"{prefix} is not under a prefix homed here"
            )
        cs = self.store.case_sensitive
        chain, p = [], prefix
        while p:
            chain.append(normalize(NA_PREFIX + p, cs))
            p = p.rpartition(".")[0]
        found = await self.store.get_many(chain)
        for key in chain:
            admins = admins_in(decode_values(found[key])) if key in found else []
            if admins:
                groups = await self.permissions.load_groups(admins)
                self.permissions.require(
                    who,
                    admins,
                    AdminPermission.MODIFY_VALUE,
                    f"report statistics for {prefix}",
                    groups,
                )
                return
        raise Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} may not report statistics for {prefix}")

    async def receive(
        self, who: Identity, node: str, reports: list[ReceivedRow]
    ) -> list[tuple[ReceivedRow, int, str]]:
        """Keep the reports ``who`` may send (one statement); each with its code and
        message. A resend, or an older snapshot, is acknowledged and changes nothing."""
        results: list[tuple[ReceivedRow, int, str]] = []
        accepted: list[ReceivedRow] = []
        checked: dict[str, tuple[int, str]] = {}
        for r in reports:
            key = normalize(r.prefix, self.store.case_sensitive)
            if key not in checked:
                try:
                    await self.may_report(who, r.prefix)
                    checked[key] = (RC.SUCCESS, "")
                except Refusal as exc:
                    checked[key] = (exc.rc, exc.message)
            rc, msg = checked[key]
            results.append((r, rc, msg))
            if rc == RC.SUCCESS:
                accepted.append(r)
        if accepted:
            await self.store.receive_statistics(str(who), node, accepted)
        return results

    async def received(
        self, who: Identity, prefix: str | None, since: str, until: str
    ) -> list[ReceivedRow]:
        """Reports kept here, for a server administrator (or a prefix's own admin)."""
        if prefix is None:
            if not self.permissions.is_server_admin(who):
                raise Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} is not a server administrator")
        else:
            await self.may_report(who, prefix)
        return await self.store.received_statistics(prefix, since, until)

    async def local(
        self, who: Identity, prefix: str | None, since: str, until: str
    ) -> list[StatisticsRow]:
        """This node's own counts and their report state (server administrators)."""
        if not self.permissions.is_server_admin(who):
            raise Refusal(RC.INSUFFICIENT_PERMISSIONS, f"{who} is not a server administrator")
        return await self.store.statistics(
            None if prefix is None else normalize(prefix, self.store.case_sensitive),
            since,
            until,
        )
