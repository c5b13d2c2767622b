"""L1 stage: answer from this worker's in-process cache, and keep what later stages find.

First in the chain, so the doors' synchronous fast path (``Resolver.cached``) is one
dictionary lookup: no await, no allocation.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import monotonic

from ..l1 import Entry, L1Cache
from ..metrics import L1_HIT, L1_MISS, TALLY
from .stage import Lookup, Memory


class L1CacheStage(Memory):
    is_cache = True

    def __init__(self, cache: L1Cache) -> None:
        self.cache = cache
        self._get = cache.get  # bound once: recall runs on every UDP answer
        self._holds = cache.holds

    def recall(self, key: str) -> Entry | None:
        e = self._get(key, monotonic())
        TALLY.cache[L1_MISS if e is None else L1_HIT] += 1
        return e

    def holds(self, key: str, values: bytes | None) -> bool:
        # A kept answer's check, on every one sent: a hit is counted; a miss is not, the
        # caller then resolving the usual way (recall counts it).
        if self._holds(key, values, monotonic()):
            TALLY.cache[L1_HIT] += 1
            return True
        return False

    def learn(self, q: Lookup, entry: Entry) -> None:
        self.cache.put(q.key, entry)

    def forget(self, keys: Sequence[str]) -> None:
        for k in keys:
            self.cache.invalidate(k)

    def forget_all(self) -> None:
        self.cache.clear()
