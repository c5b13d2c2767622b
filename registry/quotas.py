"""Per-enterprise registration quotas (IDIS RC 604), off unless configured.

A limit applies to each enterprise prefix (the prefix part of a handle): a default
for every prefix, and overrides for some. A write reserves the registrations it may
make before its transaction and settles after it: what it did not register (a refusal,
a failed write, a handle that existed) is given back, so a failed write never uses up
quota and a committed one is never undone for it.

With Redis (``shared``), the count is one per prefix for every worker and node: the
reservation is atomic (registry/shared_limits.py), seeded from the registry's count and
reconciled with it at most every ``refresh`` seconds, at a moment when no write under
the prefix is in flight (handles deleted, or loaded around the node, count then). So N
is exactly N across nodes. Reservations of a worker that died mid-write are dropped
once the prefix has had none for two minutes.

Without Redis, or while it does not answer, counts come from the registry, cached for
``refresh`` seconds per prefix with this worker's own reservations added: workers
registering under one prefix at once can overshoot by what the others register within
one refresh interval.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from .shared_limits import SharedQuota

Count = Callable[[str], Awaitable[int]]


@dataclass(frozen=True, slots=True)
class Reservation:
    prefix: str
    granted: int  # registrations this write may make
    shared: bool  # held in Redis (else in this worker's count)


@dataclass
class Quotas:
    default: int = 0  # 0: no limit
    overrides: dict[str, int] = field(default_factory=dict)
    refresh: float = 10.0
    shared: SharedQuota | None = None
    _counts: dict[str, tuple[float, int]] = field(default_factory=dict)
    _reconciled: dict[str, float] = field(default_factory=dict)

    @classmethod
    def parse(cls, default: int, overrides: str) -> Quotas | None:
        table: dict[str, int] = {}
        for part in (p.strip() for p in overrides.split(",") if p.strip()):
            prefix, sep, limit = part.partition("=")
            if not sep or not limit.strip().isdigit():
                raise ValueError(f"quota override {part!r} is not PREFIX=COUNT")
            table[prefix.strip().upper()] = int(limit)
        if default <= 0 and not table:
            return None
        return cls(default, table)

    def limit(self, prefix: str) -> int:
        return self.overrides.get(prefix.upper(), self.default)

    async def reserve(self, prefix: str, n: int, count: Count) -> Reservation | None:
        """Reserve up to ``n`` registrations under ``prefix`` (None: no quota there).
        Every reservation is settled, whatever the write did."""
        limit = self.limit(prefix)
        if limit <= 0:
            return None
        if self.shared is not None and self.shared.shared.up():
            got = await self._reserve_shared(prefix, n, limit, count)
            if got is not None:
                return Reservation(prefix, got, True)
        key = prefix.upper()
        cached = self._counts.get(key)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + self.refresh, await count(prefix))
        got = max(0, min(n, limit - cached[1]))
        self._counts[key] = (cached[0], cached[1] + got)
        return Reservation(prefix, got, False)

    async def _reserve_shared(self, prefix: str, n: int, limit: int, count: Count) -> int | None:
        shared = self.shared
        assert shared is not None
        key = prefix.upper()
        if self._reconciled.setdefault(key, time.monotonic() + self.refresh) < time.monotonic():
            self._reconciled[key] = time.monotonic() + self.refresh
            before = await shared.settled(prefix)
            if before is not None:
                await shared.reconcile(prefix, await count(prefix), before)
        got = await shared.reserve(prefix, n, limit)
        if got == -1:  # the first reservation under this prefix anywhere
            if not await shared.seed(prefix, await count(prefix)):
                return None
            self._reconciled[key] = time.monotonic() + self.refresh
            got = await shared.reserve(prefix, n, limit)
        return None if got is None or got < 0 else got

    async def used(self, prefix: str) -> int | None:
        """What the quota counts under ``prefix`` now, without counting the registry
        (a prefix may hold hundreds of millions of handles): the shared count in Redis,
        else this worker's own; None when neither has counted the prefix yet (no write
        under it since the count expired or the worker started)."""
        if self.shared is not None and self.shared.shared.up():
            got = await self.shared.used(prefix)
            if got is not None:
                return got
        cached = self._counts.get(prefix.upper())
        return None if cached is None else cached[1]

    async def settle(self, r: Reservation | None, committed: int) -> None:
        """The write holding ``r`` is over and registered ``committed`` handles: give
        back the rest. Never raises (the write's outcome is what the client hears)."""
        if r is None or r.granted == 0:
            return
        if r.shared:  # in flight until settled, even when all of it was used
            assert self.shared is not None
            await self.shared.settle(r.prefix, r.granted, committed)
            return
        key = r.prefix.upper()
        if key in self._counts:
            until, c = self._counts[key]
            self._counts[key] = (until, c - (r.granted - committed))
