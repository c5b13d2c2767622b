"""The resolver core: a lookup walks an ordered chain of stages; then the filters.

The stages (resolver/stages/, interface in stages/stage.py) are given in order where the
node is built: today L1 -> authority -> Redis (optional) -> the registry. Each has one
job; the core only walks them, tells the stages a lookup passed what a later one found,
keeps those fills from outliving a write, and carries invalidations to every stage.
Front doors call :meth:`Resolver.resolve` (or :meth:`Resolver.cached` for the
synchronous fast path) and render what it returns; they never touch SQL or Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from idnode.registry.names import normalize

from . import metrics
from .changefeed import MARK_EVERY, ChangeLog, LocalChangeFeed
from .codec import HandleValue, ResponseCode, decode_values, encode_values
from .invalidation_batches import InvalidationBatches
from .l1 import Entry
from .logs import Repeats
from .stages.stage import Lookup, Memory, Resolution, Stage

__all__ = ["NOT_FOUND", "NO_VALUES", "Resolution", "Resolver", "answer"]

log = logging.getLogger("idnode.core")

CATCH_UP_RETRY = 0.5  # seconds between attempts to catch up from the change feed
FIRST_CATCH_UP_SECONDS = 3.0  # how long a start waits for Redis before serving without it

NOT_FOUND = Resolution(ResponseCode.HANDLE_NOT_FOUND, message="Handle not found")
NO_VALUES = Resolution(ResponseCode.VALUES_NOT_FOUND, message="No values match the request")


def _no_memory(key: str) -> Entry | None:
    return None


def _holds_nothing(key: str, values: bytes | None) -> bool:
    return False


class Resolver:
    def __init__(
        self,
        stages: Sequence[Stage],
        *,
        case_sensitive: bool = False,
        feed: LocalChangeFeed | None = None,
        changes: ChangeLog | None = None,
        write_position: Callable[[], Awaitable[str]] | None = None,
        heard_write: Callable[[Sequence[str], str], None] | None = None,
        hold_replicas: Callable[[bool], None] | None = None,
        leased: bool = False,
    ) -> None:
        self.stages = tuple(stages)
        # ``leased`` (a node with Redis): L1 answers only until ``_lease_until`` (on
        # time.monotonic()), which the invalidation listener moves on each beat it hears
        # back (RedisTier.listen, :meth:`renew`). A listener that fell behind (the loop
        # stalled, its connection backed up) lets the lease run out before any writer
        # stops waiting for its confirmation, so no read after an acknowledged write is
        # answered from an L1 that has not heard of it: it reads Redis and the registry.
        self._leased = leased
        self._lease_until = 0.0
        # With read replicas (HandleStore.write_position/heard_write): every write's
        # invalidation carries the registry position it committed at, and reads of those
        # keys wait for a replica that has replayed that far (or go to the primary).
        self._write_position = write_position
        self._heard_write = heard_write
        # While the caches are not trusted, invalidations (and so the positions that keep
        # replica reads in step) may have gone unheard: the registry reads on the primary
        # (HandleStore.hold_replicas) until this worker has caught up.
        self._hold_replicas = hold_replicas
        self.case_sensitive = case_sensitive
        self.feed = feed
        first = self.stages[0] if self.stages else None
        # A memory first in the chain is asked synchronously, before any await (the
        # doors' fast path); the awaited walk then starts after it.
        self._memory = first.recall if isinstance(first, Memory) else _no_memory
        self._recall = self._memory
        self._holds = first.holds if isinstance(first, Memory) else _holds_nothing
        self._walk_from = 1 if isinstance(first, Memory) else 0
        # With Redis: the registry's change feed behind the channel. Until the listener
        # listens and this worker has caught up from the feed, the caches are passed by
        # (``_trusted``); every doubt (channel lost, Redis not told of a write) counts.
        self.changes = changes
        self._trusted = True
        self._listening = False
        self._doubts = 0
        self._wake = asyncio.Event()
        self._caught_up = asyncio.Event()  # set while trusted
        self._in_step: asyncio.Task[None] | None = None
        # Bumped when a key is invalidated: a lookup that started before the
        # invalidation must not put what it read into any stage afterwards.
        self._generation: dict[str, int] = {}
        self._epoch = 0  # bumped when the map is cleared to bound its size
        self._repeats = Repeats(log)
        # Writes that commit while an invalidation is under way go together in the next.
        self.invalidations = InvalidationBatches(self._invalidate_now)
        if changes is not None:
            self._distrust()

    # --- lookup ------------------------------------------------------------------

    def cached(self, handle: str) -> Entry | None:
        """The L1 entry for ``handle``, without awaiting anything (the fast paths)."""
        return self.recall(normalize(handle, self.case_sensitive))

    def key(self, handle: str) -> str:
        """``handle`` as the caches key it (for :meth:`recall`)."""
        return normalize(handle, self.case_sensitive)

    def recall(self, key: str) -> Entry | None:
        """:meth:`cached` for a handle already turned into its key (:meth:`key`)."""
        if self.feed is not None and self.feed.changed():
            return None  # another worker wrote: catch up on the async path first
        if self._leased and self._out_of_lease():
            return None
        return self._recall(key)

    def holds(self, key: str, values: bytes | None) -> bool:
        """Whether :meth:`recall` would give an entry of ``values``, the very object:
        an answer built from it still stands (ready_answers). Cheaper than recall."""
        if self._recall is _no_memory or (self.feed is not None and self.feed.changed()):
            return False
        if self._leased and self._out_of_lease():
            return False
        return self._holds(key, values)

    async def entry(
        self, handle: str, *, l1_checked: bool = False, flags: int = 0, recursion_count: int = 0
    ) -> Entry | Resolution:
        """The cache entry for a handle, filling the stages on the way; or a refusal.

        ``l1_checked``: the caller has just missed L1 through :meth:`cached`. ``flags``
        and ``recursion_count``: the request's opFlag and recursionCount (recursion).
        """
        key = normalize(handle, self.case_sensitive)
        if self.feed is not None and self.feed.changed():
            try:
                changed = await self.feed.catch_up()
                self.forget(changed, await self.position())  # read after the feed
            except Exception as exc:  # cannot read the feed: trust nothing cached
                log.error("cannot read invalidations (%s); clearing L1", exc)
                for stage in self.stages:
                    stage.forget_all()
        if not l1_checked and not (self._leased and self._out_of_lease()):
            e = self._recall(key)
            if e is not None:
                return e
        gen = (self._epoch, self._generation.get(key, 0))
        q = Lookup(handle, key, flags, recursion_count)
        stages = self.stages
        for n in range(self._walk_from, len(stages)):
            if not self._trusted and stages[n].is_cache:
                continue  # it may hold what a write we did not hear of changed
            got = await stages[n].lookup(q)
            if got is None:
                continue
            if (
                isinstance(got, Entry)
                and stages[n].answers_learnt
                and (self._epoch, self._generation.get(key, 0)) == gen
            ):
                for earlier in stages[:n]:
                    if self._trusted or not earlier.is_cache:
                        earlier.learn(q, got)
            return got
        return NOT_FOUND  # no stage knows the handle

    async def resolve(
        self,
        handle: str,
        indexes: tuple[int, ...] = (),
        types: tuple[str, ...] = (),
        *,
        authorized: bool = False,
        l1_checked: bool = False,
        flags: int = 0,
        recursion_count: int = 0,
    ) -> Resolution:
        e = await self.entry(
            handle, l1_checked=l1_checked, flags=flags, recursion_count=recursion_count
        )
        if isinstance(e, Resolution):
            return e
        return answer(e, indexes, types, authorized=authorized)

    # --- writes --------------------------------------------------------------------

    async def invalidate(self, handles: list[str]) -> None:
        """Forget handles everywhere: this worker's stages, what they share (Redis), and
        (by the channel or the change feed) every other worker's L1. Returns after an
        invalidation that started after this call is published: writes that commit while
        one is under way go together in the next (invalidation_batches.py).

        Called after the write committed, so it never raises: a write is acknowledged as
        what it is. With Redis, the keys go into the registry's change feed first; if
        Redis cannot be told, this worker stops trusting its caches and catches up from
        the feed once Redis is back (deleting the keys there, telling the others)."""
        await self.invalidations.submit([normalize(h, self.case_sensitive) for h in handles])

    async def _invalidate_now(self, keys: list[str]) -> None:
        """One invalidation of the keys of every write in a batch (see invalidate)."""
        position = await self.position()
        self.forget(keys, position)
        if self.changes is not None:
            try:
                await self.changes.record(keys)
            except Exception as exc:  # committed all the same; Redis is still told below
                self._repeats.error("cannot record a change in the change feed (%s)", exc)
        for stage in self.stages:
            try:
                await stage.invalidate(keys, position)
            except Exception as exc:
                self._repeats.warning(
                    "cannot invalidate a write in Redis (%s); caches unused until caught up",
                    exc,
                )
                self._distrust()
        if self.feed is not None:
            try:
                await self.feed.publish(keys)
            except Exception as exc:  # the other workers cannot be told: trust nothing cached
                log.error("cannot record a change for the other workers (%s); clearing L1", exc)
                for stage in self.stages:
                    stage.forget_all()

    # --- catching up after Redis or its listener was lost ------------------------------

    def listener_lost(self) -> None:
        """The invalidation channel is lost: what is published meanwhile goes unheard."""
        self._listening = False
        self._distrust()

    def listener_subscribed(self) -> None:
        """The channel listens again: catch up from the change feed, then trust again."""
        self._listening = True
        self._wake.set()
        if self._in_step is None and self.changes is not None:
            self._in_step = asyncio.get_running_loop().create_task(self._keep_in_step())

    def renew(self, until: float) -> None:
        """The invalidation listener heard back a beat: every invalidation published
        before it was applied. L1 may answer until ``until`` (time.monotonic())."""
        if until > self._lease_until:
            if self._leased and self._lease_until < time.monotonic() and self._lease_until:
                log.info("the invalidation listener is in step again: L1 answers again")
            self._lease_until = until

    def _out_of_lease(self) -> bool:
        """Whether L1's lease ran out (the listener is behind): then this lookup passes
        L1 by, counted and logged."""
        late = time.monotonic() - self._lease_until
        if late <= 0:
            return False
        metrics.LEASE_LAPSED.inc()
        self._repeats.warning(
            "the invalidation listener's lease ran out %.2fs ago (it has not heard back its"
            " beat): lookups pass L1 by until it does",
            late,
        )
        return True

    @property
    def trusted(self) -> bool:
        """Whether the caches are used (in step with every write's invalidation)."""
        return self._trusted

    async def in_step(self, timeout: float) -> bool:
        """Wait up to ``timeout`` until the caches are in use (the node's start waits for
        its first catch-up, so a node that says it is ready serves from them)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._caught_up.wait(), timeout)
        return self._trusted

    def _distrust(self) -> None:
        self._doubts += 1
        if self._trusted and self._in_step is not None:
            log.warning("caches unused until this worker catches up from the change feed")
        self._trusted = False
        if self._hold_replicas is not None:
            self._hold_replicas(True)
        self._caught_up.clear()
        self._recall = _no_memory  # the doors' fast path: nothing cached is served
        self._generation.clear()
        self._epoch += 1  # lookups in flight fill nothing
        for stage in self.stages:
            if stage.is_cache:
                stage.forget_all()
        self._wake.set()

    async def _keep_in_step(self) -> None:
        """While trusted, move the change feed's mark; while not, catch up as soon as the
        listener listens; retry while the feed or Redis cannot be read."""
        assert self.changes is not None
        started = False
        while True:
            self._wake.clear()
            if self._trusted:
                try:
                    await self.changes.advance()
                except Exception as exc:  # the mark stays: a later catch-up reads more
                    self._repeats.warning("cannot read the change feed's head (%s)", exc)
                with contextlib.suppress(TimeoutError):
                    # Not wait_for: on Python 3.11 it can swallow a cancel that lands as
                    # the wait ends, and this loop would outlive drain().
                    async with asyncio.timeout(MARK_EVERY):
                        await self._wake.wait()
                continue
            if not self._listening:
                await self._wake.wait()
                continue
            doubts = self._doubts
            try:
                if not started:
                    await self.changes.start()
                    started = True
                at = time.time()
                keys, newest, whole = await self.changes.since_mark()
                # Read after the feed: every change it gave was committed before this.
                position = await self.position()
                keys = list(dict.fromkeys(keys))
                self.forget(keys, position)
                for stage in self.stages:
                    await stage.catch_up(keys, everything=not whole, position=position)
            except Exception as exc:
                self._repeats.warning("cannot catch up from the change feed yet (%s)", exc)
                await asyncio.sleep(CATCH_UP_RETRY)
                continue
            if doubts == self._doubts and self._listening:
                self.changes.caught_up(newest, at)
                if self._hold_replicas is not None:
                    # Every write missed is older than the primary's position read after
                    # this: the store makes that the floor of replica reads.
                    self._hold_replicas(False)
                self._trusted = True
                self._caught_up.set()
                self._recall = self._memory
                log.info(
                    "caught up from the change feed (%d keys changed): caches in use", len(keys)
                )

    async def position(self) -> str:
        """The registry's position now ("" without read replicas, or when it cannot be
        read: then the keys are not marked, and replicas are kept in step by their lag
        bound alone)."""
        if self._write_position is None:
            return ""
        try:
            return await self._write_position()
        except Exception as exc:
            self._repeats.warning("cannot read the registry's write position (%s)", exc)
            return ""

    def forget(self, keys: list[str], position: str = "") -> None:
        """Drop keys from this worker's stages (an invalidation heard on the channel);
        ``position``: where the registry stood once the write was committed."""
        if keys and self._heard_write is not None:  # "": unknown (the store is careful)
            self._heard_write(keys, position)
        if len(self._generation) > 100_000:
            self._generation.clear()
            self._epoch += 1  # every lookup in flight now skips its fill
        for k in keys:
            self._generation[k] = self._generation.get(k, 0) + 1
        for stage in self.stages:
            stage.forget(keys)

    async def drain(self) -> None:
        """Finish the lookups under way, the far end first: what it answers fills the
        stages nearer the door, whose own work is drained after."""
        if self._in_step is not None:
            self._in_step.cancel()
        await self.invalidations.drain()
        for stage in reversed(self.stages):
            await stage.drain()


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
