"""L2 stage: answer from Redis, shared by every worker and node; keep what later stages
find, in batches.

Reads are coalesced into one MGET per loop turn (inside RedisTier). Fills are queued and
written one batch at a time: while one is under way the next ones gather, and past
MAX_QUEUED_FILLS they are skipped (a fill is an optimisation, not data). A fill queued
before a write of its key is dropped, since it carries what was read before the write.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from .. import metrics
from ..l1 import Entry, Lifetimes
from ..l2 import FOUND, RedisTier
from .stage import Lookup, Resolution, Stage

MAX_QUEUED_FILLS = 10_000  # Redis fills waiting for the one under way; more are skipped
# A fill waits this long (seconds) for others to join it. Under a light load each miss
# would otherwise be a script call of its own, and a call costs the node more CPU than
# the fill's data; a fill is an optimisation, and a write meanwhile drops it (forget)
# or the tombstone refuses it, however late it comes.
FILL_DELAY = 0.005
# A Redis that answers almost none of the reads asked of it (one node, cold: every L1
# miss is a first sight) only delays the registry read behind an MGET, and each command
# costs the node CPU (~150 µs in redis-py, as when this was measured; ~65 µs over the
# lean connection now). Measured on the 10M miss path at 10k lookups/s, with redis-py:
# p99 5.0-7.6 ms asking every miss, 3.2-4.2 ms probing, 2.4 ms without Redis.
# Reads are judged in windows of READ_WINDOW; below MIN_HIT_RATIO only one miss in
# PROBE_EVERY asks Redis, and when the probes hit again (other nodes filled it) every
# miss does. Fills go on either way: they are what makes Redis worth asking later.
READ_WINDOW = 2048
MIN_HIT_RATIO = 0.02
PROBE_EVERY = 16
CATCH_UP_BATCH = 1000  # changed keys deleted and published in one invalidation

log = logging.getLogger("idnode.l2")


class RedisCacheStage(Stage):
    is_cache = True

    def __init__(self, tier: RedisTier, lifetimes: Lifetimes) -> None:
        self.tier = tier
        self._run = b""  # the Redis server's run id when last caught up
        self.lifetimes = lifetimes
        self._fills: list[tuple[str, bytes | None]] = []
        self._flush_scheduled = False
        self._filling = False  # one fill under way at a time; the rest batch up
        self._tasks: set[asyncio.Task[None]] = set()
        self.probing = False  # asking only one miss in PROBE_EVERY (Redis answers ~none)
        self._passed = 0  # misses while probing
        self._asked = 0  # reads in this window
        self._hits = 0

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        if self.probing:
            self._passed += 1
            if self._passed % PROBE_EVERY:
                metrics.TALLY.cache[metrics.L2_SKIPPED] += 1
                return None
        raw = await self.tier.get(q.key)
        self._judge(raw is not None)
        if raw is None:
            metrics.TALLY.cache[metrics.L2_MISS] += 1
            return None
        metrics.TALLY.cache[metrics.L2_HIT] += 1
        return self.lifetimes.entry(raw[1:] if raw[:1] == FOUND else None, time.monotonic())

    def _judge(self, hit: bool) -> None:
        """Count one read; at the end of a window, probe or ask every miss."""
        self._asked += 1
        self._hits += hit
        if self._asked < READ_WINDOW:
            return
        probing = self._hits < MIN_HIT_RATIO * self._asked
        if probing != self.probing:
            log.info(
                "redis answered %d of the last %d reads: %s",
                self._hits,
                self._asked,
                f"asking it one miss in {PROBE_EVERY} until it answers more"
                if probing
                else "asking it every miss again",
            )
            self.probing = probing
        self._asked = self._hits = 0

    def learn(self, q: Lookup, entry: Entry) -> None:
        if len(self._fills) >= MAX_QUEUED_FILLS:
            return  # Redis is behind: a fill is an optimisation, skipping one loses nothing
        self._fills.append((q.key, entry.values_wire))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(FILL_DELAY, self._flush)

    def forget(self, keys: Sequence[str]) -> None:
        gone = set(keys)
        self._fills = [f for f in self._fills if f[0] not in gone]
        # An MGET under way may have read them before their tombstone: later asks go again.
        self.tier.reads.forget(gone)

    def forget_all(self) -> None:
        self._fills = []
        self.tier.reads.forget_all()

    async def invalidate(self, keys: Sequence[str], position: str = "") -> None:
        await self.tier.invalidate(list(keys), position)

    async def catch_up(
        self, keys: Sequence[str], *, everything: bool = False, position: str = ""
    ) -> None:
        """Delete what changed while Redis was not told (and tell the other listeners).
        A Redis that restarted since we last looked holds what its persistence saved,
        from an unknown time: nothing in it is trusted, the namespace is emptied (as it
        is when the change feed no longer reaches back to where this worker was); on a
        cluster, each master new since then is."""
        run = await self.tier.server_run()
        if everything:
            gone = await self.tier.clear()
            log.warning(
                "the outage outlasted the change feed: dropped the %d handles cached in redis", gone
            )
        elif self._run and run != self._run:
            # On a cluster: only the shards whose master is new (restarted, or a replica
            # that took over) are emptied.
            gone = await self.tier.clear_since(self._run)
            log.warning("redis restarted or failed over: dropped the %d handles cached there", gone)
        self._run = run
        for start in range(0, len(keys), CATCH_UP_BATCH):
            await self.tier.invalidate(list(keys[start : start + CATCH_UP_BATCH]), position)

    async def drain(self) -> None:
        """Write the fills still queued now (their flush may be due up to FILL_DELAY
        later) and wait for them."""
        while self._fills or self._tasks:
            if self._fills and not self._filling:
                self._flush()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._filling or not self._fills:
            return  # the fill under way flushes what queued meanwhile
        items, self._fills = self._fills, []
        self._filling = True
        t = asyncio.get_running_loop().create_task(self._fill(items))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _fill(self, items: list[tuple[str, bytes | None]]) -> None:
        try:
            await self.tier.put_many(items)
        finally:
            self._filling = False
            if self._fills and not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_later(FILL_DELAY, self._flush)
