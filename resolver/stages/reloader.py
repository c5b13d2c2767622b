"""A coalescing reloader for a worker's maps rebuilt from the registry (the delegation and
suspension stages): at most one rebuild runs and at most one more is queued behind it.

A burst of K changes heard (``0.NA/`` invalidations from other workers and nodes) costs at
most two rebuilds, not K: a change heard while a rebuild runs queues one more (the
running one may have read before the change), and every later change until that one
starts joins it. Lookups wait only when a change was heard since the last rebuild began
(:meth:`Reloader.fresh`), and then for the rebuild that reads after it; a timer's
rebuild (:meth:`Reloader.reload`) makes no lookup wait.

A rebuild that fails is logged; its waiters go on with the map they had (the next
change or timer tries again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger("idnode.reloader")


class Reloader:
    def __init__(self, build: Callable[[], Awaitable[None]], what: str) -> None:
        self._build = build
        self._what = what  # "the delegated prefixes": for the log
        self._requested = 0  # requests so far (each change or reload is one)
        self._heard = 0  # the request number of the last change heard
        self._built = 0  # every request up to this one has been read by a finished rebuild
        self._task: asyncio.Task[None] | None = None
        self._current: asyncio.Future[BaseException | None] | None = None
        self._current_covers: int | None = None  # None: the current one has not begun
        self._next: asyncio.Future[BaseException | None] | None = None

    @property
    def dirty(self) -> bool:
        """A change was heard that no finished rebuild has read yet."""
        return self._heard > self._built

    def changed(self) -> None:
        """A change was heard: rebuild soon; lookups wait for it (:meth:`fresh`)."""
        n = self._request()
        if n is not None:
            self._heard = n

    async def fresh(self) -> None:
        """Return once the map reflects every change heard (at once when none is pending)."""
        if self.dirty:
            await self._wait(self._heard)

    async def changed_and_wait(self) -> None:
        """:meth:`changed`, then wait for the rebuild that reads after it (never raises
        for a failed rebuild: it is logged)."""
        n = self._request()
        if n is not None:
            self._heard = n
            await self._wait(n)

    async def reload(self) -> None:
        """A rebuild that reads after this call (the timer's, or the start's), without
        making lookups wait for it; raises what the rebuild raised."""
        n = self._request()
        if n is None:  # no event loop: cannot happen in a coroutine
            return
        err = await self._wait(n)
        if err is not None:
            raise err

    def _request(self) -> int | None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a test calling forget directly)
            return None
        self._requested += 1
        if self._task is None:
            self._current = loop.create_future()
            self._current_covers = None
            self._task = loop.create_task(self._run())
        elif self._current_covers is not None and self._next is None:
            # The running rebuild may have read before this request: one more after it.
            self._next = loop.create_future()
        return self._requested

    async def _wait(self, n: int) -> BaseException | None:
        if self._built >= n:
            return None
        if self._current_covers is None or self._current_covers >= n:
            fut = self._current
        else:
            fut = self._next
        if fut is None:  # drained
            return None
        try:
            # shielded: a cancelled lookup must not cancel the rebuild others wait for
            return await asyncio.shield(fut)
        except asyncio.CancelledError:
            if fut.cancelled():  # drained: the node stops
                return None
            raise

    async def _run(self) -> None:
        try:
            while True:
                fut = self._current
                assert fut is not None
                covers = self._current_covers = self._requested
                err: BaseException | None = None
                try:
                    await self._build()
                except Exception as exc:
                    log.warning("cannot reload %s: %s", self._what, exc)
                    err = exc
                self._built = max(self._built, covers)
                if not fut.done():
                    fut.set_result(err)
                if self._next is None:
                    break
                self._current, self._next = self._next, None
                self._current_covers = None
        finally:
            self._task = None
            self._current_covers = None
            for f in (self._current, self._next):
                if f is not None and not f.done():
                    f.cancel()
            self._current = self._next = None

    async def close(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
