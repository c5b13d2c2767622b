"""What a listener's beats (RedisTier.listen's ``renew``) renew, recorded and checked the
same way for one Redis server and for a cluster."""

from __future__ import annotations

import asyncio
import itertools
import time

from idnode.resolver.l2 import BEAT_EVERY, LEASE


class Renewals:
    """A ``renew`` callback noting each renewal as (heard back at, until)."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def __call__(self, until: float) -> None:
        self.seen.append((time.monotonic(), until))

    async def check(self, count: int = 4) -> None:
        """Wait for ``count`` renewals: each of a beat sent before it came back (send
        time + LEASE), each later than the one before."""
        while len(self.seen) < count:
            await asyncio.sleep(BEAT_EVERY)
        for heard, until in self.seen:
            assert until - LEASE <= heard  # sent before it came back
        assert all(b[1] > a[1] for a, b in itertools.pairwise(self.seen))
