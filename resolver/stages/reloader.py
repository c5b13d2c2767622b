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

:class:`RegistryMapStage` is the plumbing both stages share around it: a stage whose
per-worker map is rebuilt from the registry when a ``0.NA/`` key changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence

from idnode.registry.names import is_prefix_handle
from idnode.registry.store import Store

from .stage import Stage

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


def touches_prefixes(keys: Sequence[str]) -> bool:
    return any(is_prefix_handle(k) for k in keys)


class RegistryMapStage(Stage):
    """A stage whose per-worker map is rebuilt from the registry when a ``0.NA/`` key
    changes: at start, when a change is heard (:meth:`forget`, from another worker or
    node), before this worker's own write is acknowledged (:meth:`invalidate`) and on the
    node's timer (:meth:`reload`), coalesced by a :class:`Reloader`. A subclass has its
    own lookup (awaiting ``self.reloader.fresh()`` first) and its own :meth:`_rebuild`."""

    what = "the map"  # for the log: "cannot reload <what>"

    def __init__(self, store: Store, on_change: Callable[[], None] | None = None) -> None:
        self.store = store
        # Called when the map changed: a cache in front of this stage (L1) may hold
        # answers the map now overrides.
        self.on_change = on_change
        # One rebuild at a time and at most one queued, however many changes are heard.
        self.reloader = Reloader(self._build, self.what)

    @abstractmethod
    async def _rebuild(self) -> bool:
        """Rebuild the map from the registry; whether it changed (logged by the subclass)."""

    async def _build(self) -> None:
        if await self._rebuild() and self.on_change is not None:
            self.on_change()

    async def reload(self) -> None:
        """Rebuild the map from the registry (raises if the registry cannot be read); a
        timer's rebuild: lookups do not wait for it."""
        await self.reloader.reload()

    async def refresh(self) -> None:
        """:meth:`reload`, logging (not raising) when the registry cannot be read."""
        with contextlib.suppress(Exception):  # logged by the reloader
            await self.reload()

    def forget(self, keys: Sequence[str]) -> None:
        if touches_prefixes(keys):
            self.reloader.changed()

    def forget_all(self) -> None:
        self.reloader.changed()

    async def invalidate(self, keys: Sequence[str], position: str = "") -> None:
        # This worker's own write: rebuild before the write is acknowledged, so the
        # writer's next lookup here already sees it (never raises: the write committed).
        if touches_prefixes(keys):
            await self.reloader.changed_and_wait()

    async def catch_up(
        self, keys: Sequence[str], *, everything: bool = False, position: str = ""
    ) -> None:
        if everything or touches_prefixes(keys):
            await self.reloader.changed_and_wait()

    async def drain(self) -> None:
        await self.reloader.close()
