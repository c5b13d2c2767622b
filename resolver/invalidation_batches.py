"""Invalidations of concurrent writes, told as one: group commit for the caches.

Telling the caches of a write costs round trips that do not depend on how many keys
go with it: the registry's position, the change-feed row insert, one Redis pipeline
(tombstones, deletes, PUBLISH) and the wait for every listener's confirmation. Done per
write, those round trips were most of a REST PUT's time and CPU under load. Here the
first write's invalidation goes at once; writes that commit while it is under way wait
and go together in the next one, so a busy node makes one round of trips per batch,
and a quiet one adds no delay.

What a writer is promised is unchanged: its call returns once an invalidation that
started after its commit (so it read a position at least the commit's) has been
carried everywhere. The work runs in its own task, so a request cancelled while it
waits (a client that hung up) does not cancel the invalidation of a committed write.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger("idnode.core")

MAX_BATCH_KEYS = 2000  # keys per invalidation: bounds the PUBLISH message and its acks

Flush = Callable[[list[str]], Awaitable[None]]


class InvalidationBatches:
    def __init__(self, flush: Flush, max_keys: int = MAX_BATCH_KEYS) -> None:
        self._flush = flush
        self.max_keys = max_keys
        self._waiting: deque[tuple[list[str], asyncio.Future[None]]] = deque()
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # invalidations carried (for tests and metrics)
        self.writes = 0  # writes they carried

    async def submit(self, keys: list[str]) -> None:
        """Return once ``keys`` were carried by an invalidation that started after this
        call. Never raises for the flush's sake (the flush logs its own failures)."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((keys, done))
        if self._runner is None or self._runner.done():
            self._runner = loop.create_task(self._run())
        await asyncio.shield(done)

    async def _run(self) -> None:
        try:
            await self._carry()
        finally:  # cancelled (the loop is closing): nobody is left waiting forever
            while self._waiting:
                _, done = self._waiting.popleft()
                if not done.done():
                    done.set_result(None)

    async def _carry(self) -> None:
        while self._waiting:
            batch = [self._waiting.popleft()]
            size = len(batch[0][0])
            while self._waiting and size + len(self._waiting[0][0]) <= self.max_keys:
                item = self._waiting.popleft()
                batch.append(item)
                size += len(item[0])
            keys = list(dict.fromkeys(k for ks, _ in batch for k in ks))
            try:
                await self._flush(keys)
            except Exception:  # the flush owns its error handling; this is a last guard
                log.exception("invalidation of %d keys failed", len(keys))
            finally:
                self.batches += 1
                self.writes += len(batch)
                for _, done in batch:
                    if not done.done():
                        done.set_result(None)

    async def drain(self) -> None:
        """Wait for the invalidations under way (a stopping worker answers none early)."""
        while self._runner is not None and not self._runner.done():
            runner = self._runner
            try:
                await asyncio.shield(runner)
            except asyncio.CancelledError:
                if not runner.cancelled():
                    raise  # this caller was cancelled, not the runner (the loop closing)
