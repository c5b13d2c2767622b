"""The resolver core: lookup through the cache tiers, filtering, prefix authority.

A pipeline of small stages: L1 (in-process) → L2 (Redis, optional) → L3 (the
registry). Misses at each tier are coalesced into one batched fetch. Front doors
call :meth:`Resolver.resolve` (or :meth:`Resolver.cached` for the synchronous
fast path) and render what it returns; they never touch SQL or Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import NamedTuple

from idnode.registry.names import PrefixAuthority, normalize
from idnode.registry.store import Store

from . import metrics
from .changefeed import LocalChangeFeed
from .coalesce import Coalescer
from .codec import HandleValue, ProtocolError, ResponseCode, decode_values, encode_values
from .codec.codes import NOT_HOMED_MESSAGE
from .codec.values import summarize_values
from .l1 import Entry, L1Cache
from .l2 import FOUND, RedisTier

log = logging.getLogger("idnode.core")


class Resolution(NamedTuple):
    response_code: int
    values_wire: bytes = b""  # int4 n + values, when SUCCESS
    message: str = ""  # for error answers


NOT_HOMED = Resolution(ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, message=NOT_HOMED_MESSAGE)
NOT_FOUND = Resolution(ResponseCode.HANDLE_NOT_FOUND, message="Handle not found")
NO_VALUES = Resolution(ResponseCode.VALUES_NOT_FOUND, message="No values match the request")
STORE_DOWN = Resolution(ResponseCode.ERROR, message="The registry is unavailable; try again")
MAX_QUEUED_FILLS = 10_000  # Redis fills waiting for the one under way; more are skipped


class Resolver:
    def __init__(
        self,
        store: Store,
        authority: PrefixAuthority,
        *,
        l2: RedisTier | None = None,
        l1_max_bytes: int = 64 * 1024 * 1024,
        l1_ttl: float = 60.0,
        negative_ttl: float = 5.0,
        max_batch: int = 256,
        store_timeout: float = 5.0,
        feed: LocalChangeFeed | None = None,
    ) -> None:
        self.feed = feed
        self.store = store
        self.authority = authority
        self.l2 = l2
        self.l1 = L1Cache(l1_max_bytes)
        self.l1_ttl = l1_ttl
        self.negative_ttl = negative_ttl
        self.case_sensitive = store.case_sensitive
        # As many SQL batches under way as the store has connections: more would only
        # queue for one, and keys asked meanwhile go out together in the next batch.
        self.l3: Coalescer[str, bytes] = Coalescer(
            store.get_many,
            max_batch=max_batch,
            timeout=store_timeout,
            max_inflight=store.read_concurrency,
        )
        self._l2_writes: list[tuple[str, bytes | None]] = []
        self._l2_flush_scheduled = False
        self._l2_filling = False  # one fill under way at a time; the rest batch up
        self._tasks: set[asyncio.Task[None]] = set()
        # Bumped when a key is invalidated: a lookup that started before the
        # invalidation must not put what it read into L1 or Redis afterwards.
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped when the map is cleared to bound its size

    # --- lookup ------------------------------------------------------------------

    def cached(self, handle: str) -> Entry | None:
        """The L1 entry for ``handle``, without awaiting anything (the UDP fast path)."""
        if self.feed is not None and self.feed.changed():
            return None  # another worker wrote: catch up on the async path first
        e = self.l1.get(normalize(handle, self.case_sensitive), time.monotonic())
        if e is None:
            metrics.TALLY.cache[metrics.L1_MISS] += 1
        else:
            metrics.TALLY.cache[metrics.L1_HIT] += 1
        return e

    async def entry(self, handle: str, *, l1_checked: bool = False) -> Entry | Resolution:
        """The cache entry for a handle, filling the tiers on the way; or a refusal.

        ``l1_checked``: the caller has just missed L1 through :meth:`cached`.
        """
        key = normalize(handle, self.case_sensitive)
        if self.feed is not None and self.feed.changed():
            try:
                self.forget(await self.feed.catch_up())
            except Exception as exc:  # cannot read the feed: trust nothing cached
                log.error("cannot read invalidations (%s); clearing L1", exc)
                self.l1.clear()
        if not l1_checked:
            e = self.l1.get(key, time.monotonic())
            if e is not None:
                metrics.TALLY.cache[metrics.L1_HIT] += 1
                return e
            metrics.TALLY.cache[metrics.L1_MISS] += 1
        if not self.authority.serves(handle):
            return NOT_HOMED
        gen = (self._epoch, self._generation.get(key, 0))
        if self.l2 is not None:
            raw = await self.l2.get(key)
            if raw is not None:
                metrics.TALLY.cache[metrics.L2_HIT] += 1
                e = self._entry(raw[1:] if raw[:1] == FOUND else None, time.monotonic())
                if (self._epoch, self._generation.get(key, 0)) == gen:
                    self.l1.put(key, e)
                return e
            metrics.TALLY.cache[metrics.L2_MISS] += 1
        try:
            vals = await self.l3.get(key)
        except Exception as exc:  # the store is down or slow: say so, keep serving the rest
            log.error("registry lookup failed: %s", exc)
            return STORE_DOWN
        metrics.TALLY.cache[metrics.L3_HIT if vals is not None else metrics.L3_MISS] += 1
        e = self._entry(vals, time.monotonic())
        if (self._epoch, self._generation.get(key, 0)) == gen:
            self.l1.put(key, e)
            if self.l2 is not None:
                self._queue_l2_write(key, vals)
        return e

    async def resolve(
        self,
        handle: str,
        indexes: tuple[int, ...] = (),
        types: tuple[str, ...] = (),
        *,
        authorized: bool = False,
        l1_checked: bool = False,
    ) -> Resolution:
        e = await self.entry(handle, l1_checked=l1_checked)
        if isinstance(e, Resolution):
            return e
        return answer(e, indexes, types, authorized=authorized)

    # --- cache fill ----------------------------------------------------------------

    def _entry(self, values_wire: bytes | None, now: float) -> Entry:
        if values_wire is None:
            return Entry(None, True, now + self.negative_ttl)
        try:
            all_public, min_relative, min_absolute = summarize_values(values_wire)
        except ProtocolError:
            # A corrupt row must not take the node down; it answers as not found and says so.
            log.error("registry row does not decode; serving it as not found")
            return Entry(None, True, now + self.negative_ttl)
        ttl = self.l1_ttl
        if min_relative is not None:
            ttl = min(ttl, max(0, min_relative))
        if min_absolute is not None:
            ttl = min(ttl, max(0.0, min_absolute - time.time()))
        return Entry(values_wire, all_public, now + ttl)

    def _queue_l2_write(self, key: str, vals: bytes | None) -> None:
        if len(self._l2_writes) >= MAX_QUEUED_FILLS:
            return  # Redis is behind: a fill is an optimisation, skipping one loses nothing
        self._l2_writes.append((key, vals))
        if not self._l2_flush_scheduled:
            self._l2_flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_l2)

    def _flush_l2(self) -> None:
        self._l2_flush_scheduled = False
        if self.l2 is None:
            self._l2_writes = []
            return
        if self._l2_filling or not self._l2_writes:
            return  # the fill under way flushes what queued meanwhile
        items, self._l2_writes = self._l2_writes, []
        self._l2_filling = True
        t = asyncio.get_running_loop().create_task(self._fill_l2(self.l2, items))
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def _fill_l2(self, l2: RedisTier, items: list[tuple[str, bytes | None]]) -> None:
        try:
            await l2.put_many(items)
        finally:
            self._l2_filling = False
            if self._l2_writes and not self._l2_flush_scheduled:
                self._l2_flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_l2)

    async def invalidate(self, handles: list[str]) -> None:
        """Forget handles everywhere: this worker's L1, Redis, and (by the channel) every
        other worker's L1. Returns after the invalidation is published."""
        keys = [normalize(h, self.case_sensitive) for h in handles]
        self.forget(keys)
        if self.l2 is not None:
            await self.l2.invalidate(keys)
        if self.feed is not None:
            await self.feed.publish(keys)

    def forget(self, keys: list[str]) -> None:
        """Drop keys from this worker's L1 (an invalidation heard on the channel)."""
        if len(self._generation) > 100_000:
            self._generation.clear()
            self._epoch += 1  # every lookup in flight now skips its fill
        for k in keys:
            self.l1.invalidate(k)
            self._generation[k] = self._generation.get(k, 0) + 1
            # Queued fills of this key read the old value: drop them.
            self._l2_writes = [w for w in self._l2_writes if w[0] != k]

    async def drain(self) -> None:
        await self.l3.drain()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def answer(
    e: Entry, indexes: tuple[int, ...], types: tuple[str, ...], *, authorized: bool = False
) -> Resolution:
    """Apply the request's filters to a cache entry.

    Index and type filters are OR-ed; a type ending in "." matches sub-types. Values
    without PUBLIC_READ leave only for an authorised caller (registration brings
    authentication; until then every caller is public).
    """
    if e.values_wire is None:
        return NOT_FOUND
    if not indexes and not types and (e.all_public or authorized):
        return Resolution(ResponseCode.SUCCESS, e.values_wire)
    kept: list[HandleValue] = []
    for v in decode_values(e.values_wire):
        if not (authorized or v.public_read):
            continue
        if (indexes or types) and not (v.index in indexes or any(v.type_matches(t) for t in types)):
            continue
        kept.append(v)
    if not kept:
        return NO_VALUES
    return Resolution(ResponseCode.SUCCESS, encode_values(kept))
