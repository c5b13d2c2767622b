"""Per-enterprise registration quotas (IDIS RC 604), off unless configured.

A limit applies to each enterprise prefix (the prefix part of a handle): a default
for every prefix, and overrides for some. Counts come from the registry and are
cached for ``refresh`` seconds per prefix, with this worker's own registrations
added meanwhile: several workers registering under one prefix at once can overshoot
by what they register within one refresh interval.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field


@dataclass
class Quotas:
    default: int = 0  # 0: no limit
    overrides: dict[str, int] = field(default_factory=dict)
    refresh: float = 10.0
    _counts: dict[str, tuple[float, int]] = field(default_factory=dict)

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

    async def room(self, prefix: str, count: Callable[[str], Awaitable[int]]) -> int | None:
        """How many more identifiers ``prefix`` may register (None: unlimited)."""
        limit = self.limit(prefix)
        if limit <= 0:
            return None
        key = prefix.upper()
        cached = self._counts.get(key)
        if cached is None or cached[0] < time.monotonic():
            cached = (time.monotonic() + self.refresh, await count(prefix))
            self._counts[key] = cached
        return max(0, limit - cached[1])

    def used(self, prefix: str, n: int) -> None:
        """Record ``n`` registrations made by this worker since the count was read."""
        key = prefix.upper()
        if key in self._counts:
            until, c = self._counts[key]
            self._counts[key] = (until, c + n)
