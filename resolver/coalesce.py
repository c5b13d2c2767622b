"""Coalescing concurrent misses into one batched fetch.

Keys asked for in one event-loop turn go out together when the turn ends (or as
soon as ``max_batch`` are waiting): one Redis MGET, one SQL query. A key already on
its way is not asked twice, until :meth:`forget` says it changed: a fetch already under
way then may carry what was there before, so a later ask goes out again instead of
joining it. ``timeout`` bounds how long a miss waits for its batch; past it the waiters
get TimeoutError and the caller moves on.

``max_inflight`` bounds the fetches under way. While they run, new keys wait and go
out together when one finishes (or when ``max_batch`` are waiting), so batches grow
with the load instead of a fixed delay: under open-loop load each turn holds one
request, and a fetch per key cost redis-py ~100 µs of CPU each, enough to saturate
the node at 9k misses/s (p99 0.43 s at 20k lookups/s offered, against 7 ms without
Redis; measured with idnode loadtest run).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Coalescer(Generic[K, V]):
    def __init__(
        self,
        fetch: Callable[[list[K]], Awaitable[dict[K, V]]],
        *,
        max_batch: int = 256,
        timeout: float = 1.0,
        max_inflight: int | None = None,
    ) -> None:
        self._fetch = fetch
        self.max_batch = max_batch
        self.timeout = timeout
        self.max_inflight = max_inflight
        self._running = 0
        self._pending: dict[K, asyncio.Future[V | None]] = {}
        self._scheduled = False
        self._inflight: dict[K, asyncio.Future[V | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches = 0  # for tests and metrics: how many fetches were made
        self.keys_fetched = 0

    def get(self, key: K) -> asyncio.Future[V | None]:
        """A future for the value of ``key`` (None when the fetch found nothing)."""
        fut = self._inflight.get(key) or self._pending.get(key)
        if fut is not None:
            return fut
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[key] = fut
        if len(self._pending) >= self.max_batch:
            self._flush()
        elif not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return fut

    def forget(self, keys: Iterable[K]) -> None:
        """``keys`` changed (a write committed): the fetches under way may have read them
        before it, so an ask from now on is fetched again rather than joining one. The
        asks already waiting keep their fetch: they started before the write was
        acknowledged. Keys not yet sent stay: their fetch starts after the change."""
        for k in keys:
            self._inflight.pop(k, None)

    def forget_all(self) -> None:
        """:meth:`forget` for every key under way (what changed is not known)."""
        self._inflight.clear()

    def _flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        if (
            self.max_inflight is not None
            and self._running >= self.max_inflight
            and len(self._pending) < self.max_batch
        ):
            return  # a fetch under way flushes these when it finishes
        batch, self._pending = self._pending, {}
        self._running += 1
        self._inflight.update(batch)
        task = asyncio.get_running_loop().create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: dict[K, asyncio.Future[V | None]]) -> None:
        try:
            await self._fetch_batch(batch)
        finally:
            self._running -= 1
            if self._pending and not self._scheduled:
                self._scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    async def _fetch_batch(self, batch: dict[K, asyncio.Future[V | None]]) -> None:
        keys = list(batch)
        self.batches += 1
        self.keys_fetched += len(keys)
        try:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for runs the fetch as a
            # task of its own, a task more per batch on the miss path.
            async with asyncio.timeout(self.timeout):
                found = await self._fetch(keys)
        except BaseException as exc:  # every waiter learns why, including on cancellation
            for k, fut in batch.items():
                self._done(k, fut)
                if not fut.done():
                    fut.set_exception(
                        exc if isinstance(exc, Exception) else asyncio.CancelledError()
                    )
                    fut.exception()  # mark retrieved: a waiter may have given up already
            if not isinstance(exc, Exception):
                raise
            return
        for k, fut in batch.items():
            self._done(k, fut)
            if not fut.done():
                fut.set_result(found.get(k))

    def _done(self, key: K, fut: asyncio.Future[V | None]) -> None:
        """``key``'s fetch ended: no longer under way, unless a later ask (after a
        :meth:`forget`) put a fetch of its own there."""
        if self._inflight.get(key) is fut:
            del self._inflight[key]

    async def drain(self) -> None:
        """Wait for the fetches under way (graceful shutdown)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
