"""Coherence between the workers of one node that has no Redis.

A write appends the changed keys to the registry's ``invalidations`` table, then
stores the newest id in a small shared file mapped into every worker's memory. Each
lookup compares that number with the last one it acted on (one 8-byte read); when it
differs, the worker reads the new invalidations and drops those keys from its L1
before answering. So once a writer has reported success, no worker of this node serves
the old value. Workers on other machines need Redis (the channel in l2.py).

With Redis, the same table is the source of truth behind the channel (:class:`ChangeLog`):
every write is recorded in it before Redis is told, and a worker that lost Redis or its
listener catches up from it (deleting the changed keys from Redis, dropping them from
L1) before it trusts either again.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections import deque
from pathlib import Path

from idnode.registry.store import FEED_KEEP_SECONDS, InvalidationLog

_SEQ = struct.Struct("<q")


class LocalChangeFeed:
    def __init__(self, store: InvalidationLog, path: str | Path) -> None:
        self.store = store
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SEQ.size:
                os.ftruncate(fd, mmap.PAGESIZE)
            self._map = mmap.mmap(fd, mmap.PAGESIZE)
        finally:
            os.close(fd)
        # Start from now: L1 starts empty, so older invalidations cannot matter.
        self.seen = self.current()
        self.applied = self.seen  # the newest invalidation id acted on

    def current(self) -> int:
        return int(_SEQ.unpack_from(self._map, 0)[0])

    def changed(self) -> bool:
        """One read of shared memory: has any worker written since we last looked?"""
        return bool(_SEQ.unpack_from(self._map, 0)[0] != self.seen)

    async def publish(self, keys: list[str]) -> None:
        newest = await self.store.append_invalidations(keys)
        # Any change of the number makes readers look; a smaller late write is harmless.
        _SEQ.pack_into(self._map, 0, newest)
        self._map.flush()

    async def catch_up(self) -> list[str]:
        """Keys invalidated since we last looked (reads the table once)."""
        self.seen = self.current()
        rows = await self.store.invalidations_since(self.applied)
        if rows:
            self.applied = rows[-1][0]
        return [k for _, k in rows]

    def close(self) -> None:
        self._map.close()


# A node with Redis hears changes on the channel; the feed is what it catches up from
# after losing Redis or its listener. Its mark trails the feed by MARK_LAG: a change is
# appended before Redis is told, and one told just before the listener was lost may
# never have been heard, so a catch-up re-reads a little more than it strictly must.
MARK_LAG = 30.0
MARK_EVERY = 10.0
KEEP_MARGIN = 300.0  # a mark this close to the feed's retention may have lost changes


class ChangeLog:
    """Where a worker with Redis stands in the registry's change feed (``invalidations``).

    Every write appends its keys here before Redis is told, so the feed holds every
    acknowledged change even when Redis did not hear of it. :meth:`since_mark` gives the
    keys changed since a point this worker had certainly applied (trailing by MARK_LAG);
    :meth:`advance` moves that point while the worker is in step with Redis.
    """

    def __init__(self, store: InvalidationLog) -> None:
        self.store = store
        self.mark = 0
        self.mark_at = time.time()  # when the mark was the feed's head
        self._samples: deque[tuple[float, int, float]] = deque()

    async def start(self) -> None:
        """From now: the caches start empty, so older changes cannot matter."""
        self.mark = await self.store.newest_invalidation()
        self.mark_at = time.time()
        self._samples.clear()

    async def record(self, keys: list[str]) -> None:
        await self.store.append_invalidations(keys)

    async def since_mark(self) -> tuple[list[str], int, bool]:
        """Keys changed since the mark, the newest id read, and whether that is all of
        them (False once the mark is older than the feed keeps: some may be gone)."""
        whole = time.time() - self.mark_at < FEED_KEEP_SECONDS - KEEP_MARGIN
        rows = await self.store.invalidations_since(self.mark)
        return [k for _, k in rows], (rows[-1][0] if rows else self.mark), whole

    def caught_up(self, newest: int, at: float) -> None:
        """Everything up to ``newest``, the head at wall time ``at``, is applied; it
        becomes the mark once MARK_LAG has passed (a change committed out of id order may
        still be arriving)."""
        self._samples.clear()
        self._samples.append((time.monotonic(), newest, at))

    async def advance(self) -> None:
        """In step with Redis: sample the feed's head; the mark moves to the newest sample
        at least MARK_LAG old."""
        now = time.monotonic()
        if not self._samples or now - self._samples[-1][0] >= MARK_EVERY:
            at = time.time()
            self._samples.append((now, await self.store.newest_invalidation(), at))
        while self._samples and now - self._samples[0][0] >= MARK_LAG:
            _, newest, at = self._samples.popleft()
            if newest >= self.mark:
                self.mark, self.mark_at = newest, at
