"""Coherence between the workers of one node that has no Redis.

A write appends the changed keys to the registry's ``invalidations`` table, then
stores the newest id in a small shared file mapped into every worker's memory. Each
lookup compares that number with the last one it acted on (one 8-byte read); when it
differs, the worker reads the new invalidations and drops those keys from its L1
before answering. So once a writer has reported success, no worker of this node serves
the old value. Workers on other machines need Redis (the channel in l2.py).
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

from idnode.registry.store import InvalidationLog

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
