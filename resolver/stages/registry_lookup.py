"""L3 stage: read the registry (SQL), the last word on what a handle holds.

Keys asked in one loop turn go out as one query (Coalescer); as many queries run at
once as the store has connections. A registry that fails or is slow gets the error
answer for the handles waiting on it; the node keeps serving the rest.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from idnode.registry.store import HandleStore

from .. import metrics
from ..coalesce import Coalescer
from ..codec import ResponseCode
from ..l1 import Entry, Lifetimes
from .stage import Lookup, Resolution, Stage

log = logging.getLogger("idnode.core")  # the lookup chain logs under the core's name

STORE_DOWN = Resolution(ResponseCode.ERROR, message="The registry is unavailable; try again")


class RegistryStage(Stage):
    def __init__(
        self,
        store: HandleStore,
        lifetimes: Lifetimes,
        *,
        max_batch: int = 256,
        timeout: float = 5.0,
    ) -> None:
        self.lifetimes = lifetimes
        # As many SQL batches under way as the store has connections: more would only
        # queue for one, and keys asked meanwhile go out together in the next batch.
        self.reads: Coalescer[str, bytes] = Coalescer(
            store.get_many,
            max_batch=max_batch,
            timeout=timeout,
            max_inflight=store.read_concurrency,
        )

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        try:
            vals = await self.reads.get(q.key)
        except Exception as exc:  # the store is down or slow: say so, keep serving the rest
            log.error("registry lookup failed: %s", exc)
            return STORE_DOWN
        metrics.TALLY.cache[metrics.L3_HIT if vals is not None else metrics.L3_MISS] += 1
        return self.lifetimes.entry(vals, time.monotonic())

    def forget(self, keys: Sequence[str]) -> None:
        # A query under way may have read these before the write: later asks go again.
        self.reads.forget(keys)

    def forget_all(self) -> None:
        self.reads.forget_all()

    async def drain(self) -> None:
        await self.reads.drain()
