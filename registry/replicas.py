"""PostgreSQL read replicas: which batched lookups a streaming replica may answer.

A replica is a hot standby replaying the primary's WAL; what it answers is the registry
as it was at its replay position. A lookup may go to it only when that cannot be older
than an acknowledged write of the keys asked:

* every write's invalidation carries the primary's WAL position after its commit
  (``HandleStore.write_position``), and each worker that hears it records, per key, that
  position as required (:class:`Requirements`, fed by ``HandleStore.heard_write``) before
  it acknowledges the invalidation, that is before the write is answered;
* a key goes to a replica only if the replica's replay position, read *before* the query
  starts, is at least the key's requirement and the floor (a hot-standby snapshot taken
  after a commit record was replayed sees that commit); the rest go to the primary;
* the floor starts at the primary's position when the node starts (writes made before
  it are older than anything this node heard) and rises when requirements are pruned
  (those every usable replica has replayed) or when there are too many to keep (then
  the oldest are folded into it: a replica serves less until it catches up, never older);
* a replica that does not answer the poll, is no longer a standby, or has not replayed
  what the primary had ``max_lag`` seconds ago is not used at all until a poll finds it
  well again; a new connection to it must see at least the position routing relied on.

This module keeps the positions and the replicas' health; ``postgres_store`` sends the
queries. Positions are ``pg_lsn`` text (``16/B374D848``), compared as integers.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from .pg_pool import ConnectionPool
from .store import redact_url

log = logging.getLogger("idnode.registry.replicas")

POLL_INTERVAL = 0.25  # seconds between reads of every replica's replay position
POLL_TIMEOUT = 1.0  # a replica that does not answer a poll this fast is skipped
QUERY_TIMEOUT = 2.0  # a lookup on a replica taking longer goes to the primary instead
MAX_REQUIREMENTS = 200_000  # keys with a required position kept (about 20 MB at most)
UNPOSITIONED_LOG_EVERY = 60.0  # seconds between warnings of position-less invalidations


def lsn(text: str | None) -> int:
    """A pg_lsn's text (``X/Y``, both hex) as an integer; "" or None is 0."""
    if not text:
        return 0
    high, _, low = str(text).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def lsn_text(n: int) -> str:
    return f"{n >> 32:X}/{n & 0xFFFFFFFF:X}"


class Requirements:
    """Per key, the newest write position heard for it, bounded in number; and the floor
    every key needs in any case. ``needed(key)`` is what a replica must have replayed."""

    def __init__(self, floor: int = 0, cap: int = MAX_REQUIREMENTS) -> None:
        self.floor = floor
        self.cap = cap
        self._by_key: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []  # (position, key); stale entries allowed

    def __len__(self) -> int:
        return len(self._by_key)

    def require(self, keys: Sequence[str], position: int) -> None:
        if position <= self.floor:
            return
        for k in keys:
            if self._by_key.get(k, 0) < position:
                self._by_key[k] = position
                heapq.heappush(self._heap, (position, k))
        if len(self._heap) > self.cap:
            self._fold(len(self._heap) - self.cap * 9 // 10)

    def needed(self, key: str) -> int:
        own = self._by_key.get(key, 0)
        return own if own > self.floor else self.floor

    def raise_floor(self, position: int) -> None:
        """Every key needs at least ``position`` from now on; what it implies is dropped."""
        if position > self.floor:
            self.floor = position
        while self._heap and self._heap[0][0] <= self.floor:
            p, k = heapq.heappop(self._heap)
            if self._by_key.get(k) == p:
                del self._by_key[k]

    def _fold(self, n: int) -> None:
        """Too many to keep: the ``n`` oldest become part of the floor (never dropped)."""
        highest = self.floor
        for _ in range(min(n, len(self._heap))):
            p, k = heapq.heappop(self._heap)
            highest = max(highest, p)
            if self._by_key.get(k) == p:
                del self._by_key[k]
        log.warning(
            "more than %d keys written recently await the read replicas: the floor of every "
            "lookup rises to %s (replicas answer again once they have replayed it)",
            self.cap,
            lsn_text(highest),
        )
        self.raise_floor(highest)


@dataclass
class Replica:
    """One read replica and what the last poll found."""

    url: str
    name: str  # for logs and metric labels: the URL without its password
    pool: ConnectionPool | None = None
    replayed: int = 0  # replay position read by the last successful poll (0: none yet)
    usable: bool = False
    state: str = "starting"  # usable / down / lagging / not a standby / behind
    reason: str = ""
    lag_bytes: int = 0  # the primary's position minus this replay position, at the poll
    lag_seconds: float = 0.0  # since the primary first had something this one lacks
    keys_read: int = 0  # keys this replica answered, since the last metrics flush


@dataclass
class ReplicaStatus:
    """What the node's metrics show of one replica."""

    name: str
    usable: bool
    lag_bytes: int
    lag_seconds: float


# Called after every poll with each replica's status and the keys read since the last
# call, by where they were read (a replica's name or "primary"): the node's metrics.
Observer = Callable[[list[ReplicaStatus], dict[str, int]], None]


class ReplicaSet:
    """The read replicas of one store: pools, the poller, the requirements, the routing."""

    def __init__(
        self,
        urls: Sequence[str],
        primary_position: Callable[[], Awaitable[int]],
        *,
        max_lag: float,
        pool_size: int,
        observer: Observer | None = None,
    ) -> None:
        self.replicas = [Replica(u, redact_url(u)) for u in urls]
        self._primary_position = primary_position
        self.max_lag = max_lag
        self.pool_size = pool_size
        self.observer = observer
        self.requirements = Requirements()
        self.primary_keys_read = 0
        # (monotonic time, primary position) of recent polls: what the primary had
        # max_lag seconds ago is what a usable replica must have replayed.
        self._history: deque[tuple[float, int]] = deque()
        # A write committed at a position nobody could read (the primary did not answer
        # just after the commit, or an invalidation came without one): every lookup goes
        # to the primary until a poll reads its position, which then becomes the floor.
        self._unknown_write = False
        # Bumped by every unknown write: a poll clears the flag only if none came while
        # it read the primary (one that did may have committed after that reading).
        self._unknown_writes = 0
        # Held (the core does not trust its caches, so it may have missed invalidations
        # and their positions): every lookup goes to the primary until released.
        self._held = False
        self._unpositioned = 0  # invalidations without a position, not yet logged
        self._unpositioned_logged = 0.0
        self._turn = 0
        self._task: asyncio.Task[None] | None = None

    # --- life --------------------------------------------------------------------------

    async def open(self) -> None:
        """Pools (connecting lazily: a replica down at start is only skipped), the floor
        (the primary's position now), a first poll, then the poller."""
        for r in self.replicas:
            r.pool = ConnectionPool(self._connector(r), self.pool_size)  # connects lazily
        self.requirements.raise_floor(await self._primary_position())
        await self.poll()
        self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for r in self.replicas:
            if r.pool is not None:
                await r.pool.close()
                r.pool = None

    def _connector(self, r: Replica) -> Callable[[], Awaitable[asyncpg.Connection]]:
        """A new connection to a replica (the pool reconnects on its own, for instance
        after the replica restarted and replays again from an older restart point) must
        see at least the position routing relies on; else the lookup goes elsewhere."""

        async def connect() -> asyncpg.Connection:
            con = await asyncpg.connect(
                r.url, timeout=POLL_TIMEOUT * 2, command_timeout=QUERY_TIMEOUT * 5
            )
            try:
                now_at = lsn(await con.fetchval("SELECT pg_last_wal_replay_lsn()::text"))
                if now_at < r.replayed:
                    raise ReplicaBehind(
                        f"{r.name} is at {lsn_text(now_at)}, before {lsn_text(r.replayed)}"
                    )
            except BaseException:
                con.terminate()
                raise
            return con

        return connect

    # --- health ------------------------------------------------------------------------

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            try:
                await self.poll()
            except Exception as exc:  # keep polling whatever happens
                log.warning("cannot poll the read replicas: %s", exc)

    async def poll(self) -> None:
        """Read the primary's position, then every replica's replay position (after it,
        so a lag is never under-estimated), and update usability and the floor."""
        now = time.monotonic()
        unknown_before = self._unknown_writes
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns the result of
            # a read that finished as close() cancelled this task, swallowing the cancel,
            # and close() then waited for the poller for ever (a CI run hung 600 s).
            async with asyncio.timeout(POLL_TIMEOUT):
                primary = await self._primary_position()
        except Exception as exc:
            # Without the primary's position the lag bound is judged on the last one
            # read: replicas keep answering what they hold (writes fail meanwhile).
            log.debug("cannot read the primary's position: %s", exc)
        else:
            self._history.append((now, primary))
            if self._unknown_write and self._unknown_writes == unknown_before:
                self._unknown_write = False
                self.requirements.raise_floor(primary)
        results = await asyncio.gather(*(self._poll_one(r) for r in self.replicas))
        history = self._history
        # What the primary had max_lag seconds ago: the newest sample that old.
        while len(history) > 1 and history[1][0] <= now - self.max_lag:
            history.popleft()
        bound = history[0][1] if history and history[0][0] <= now - self.max_lag else 0
        newest = history[-1][1] if history else 0
        for r, (found, reason) in zip(self.replicas, results, strict=True):
            if found is None:
                r.replayed = 0  # nothing known: a new connection is not held to it
                self._set(r, False, "down", reason)
                continue
            r.replayed = found
            r.lag_bytes = max(0, newest - found)
            lacking = [t for t, p in history if p > found]
            r.lag_seconds = now - lacking[0] if lacking else 0.0
            if found < bound:
                self._set(
                    r,
                    False,
                    "lagging",
                    f"replayed {lsn_text(found)}, not yet what the primary had "
                    f"{self.max_lag:g} s ago ({lsn_text(bound)}; {r.lag_bytes} bytes behind now)",
                )
            else:
                self._set(r, True, "usable", f"replayed {lsn_text(found)}")
        usable = [r.replayed for r in self.replicas if r.usable]
        if usable:
            # What every usable replica has replayed needs no per-key requirement; a
            # replica coming back must have replayed this far before it answers anything.
            self.requirements.raise_floor(min(usable))
        self.observe()

    async def _poll_one(self, r: Replica) -> tuple[int | None, str]:
        if r.pool is None:
            return None, "closed"
        try:
            async with asyncio.timeout(POLL_TIMEOUT):
                async with r.pool.acquire() as c:
                    row = await c.fetchrow(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
                    )
        except ReplicaBehind as exc:
            return None, f"it went back: {exc}"
        except TimeoutError:
            return None, f"no answer within {POLL_TIMEOUT:g} s"
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            return None, f"{type(exc).__name__}: {exc}"
        if row is None or not row[0]:
            return None, "not a standby any more (promoted?): its history may differ"
        return lsn(row[1]), ""

    def _set(self, r: Replica, usable: bool, state: str, reason: str) -> None:
        """One log line per change of state, not per poll or query."""
        changed = r.state != state
        r.usable, r.reason = usable, reason
        if not changed:
            return
        was, r.state = r.state, state
        if usable:
            log.info("read replica %s is used (%s; was %s)", r.name, reason, was)
        else:
            log.warning(
                "read replica %s is skipped: %s (%s); its lookups go to another replica "
                "or the primary",
                r.name,
                state,
                reason,
            )

    def failed(self, r: Replica, exc: BaseException) -> None:
        """A lookup on ``r`` failed: skip it until a poll finds it well again."""
        r.replayed = 0
        self._set(r, False, "down", f"a lookup failed: {type(exc).__name__}: {exc}")

    def observe(self) -> None:
        if self.observer is None:
            return
        reads = {r.name: r.keys_read for r in self.replicas if r.keys_read}
        if self.primary_keys_read:
            reads["primary"] = self.primary_keys_read
        for r in self.replicas:
            r.keys_read = 0
        self.primary_keys_read = 0
        self.observer(
            [ReplicaStatus(r.name, r.usable, r.lag_bytes, r.lag_seconds) for r in self.replicas],
            reads,
        )

    # --- routing -----------------------------------------------------------------------

    def plan(self, keys: Sequence[str]) -> list[tuple[Replica | None, list[str]]]:
        """Where each key is read: the usable replicas in turn (spreading the batches),
        each key to the first that has replayed what the key needs, else the primary
        (None). Replay positions are those of the last poll: read before any query now
        starting, whose snapshot is therefore at least that new."""
        usable = [r for r in self.replicas if r.usable and r.replayed > 0]
        if not usable or self._unknown_write or self._held:
            return [(None, list(keys))]
        self._turn = (self._turn + 1) % len(usable)
        order = usable[self._turn :] + usable[: self._turn]
        out: dict[int, list[str]] = {}
        need = self.requirements.needed
        for k in keys:
            n = need(k)
            for i, r in enumerate(order):
                if r.replayed >= n:
                    out.setdefault(i, []).append(k)
                    break
            else:
                out.setdefault(-1, []).append(k)
        return [(order[i] if i >= 0 else None, ks) for i, ks in out.items()]

    def unknown_write(self) -> None:
        """Some write committed at a position not known here: read everything on the
        primary until the next poll has read the primary's position (now at least that
        write's) and made it the floor. A poll already reading the primary when this
        is called does not clear it: its reading may precede the write."""
        self._unknown_write = True
        self._unknown_writes += 1

    def unpositioned_write(self, position: str) -> None:
        """An invalidation came without a position this code reads (an older node still
        writing, say): an unknown write, logged once a minute with a count, not once per
        write on every worker."""
        self.unknown_write()
        self._unpositioned += 1
        now = time.monotonic()
        if now - self._unpositioned_logged >= UNPOSITIONED_LOG_EVERY:
            log.warning(
                "%d write invalidation(s) carried no WAL position (last %r): lookups go to "
                "the primary until a poll reads its position (an older node writing?)",
                self._unpositioned,
                position[:40],
            )
            self._unpositioned, self._unpositioned_logged = 0, now

    def hold(self, held: bool) -> None:
        """While held, every lookup goes to the primary: the core does not trust its
        caches, so invalidations (and the positions they carry) may have gone unheard.
        Released once it has caught up: the writes it missed are then older than the
        primary's position the next poll reads, which becomes the floor (an unknown
        write), so no replica answers before it has replayed them."""
        if held == self._held:
            return
        self._held = held
        if not held:
            self.unknown_write()

    def status(self) -> list[ReplicaStatus]:
        return [ReplicaStatus(r.name, r.usable, r.lag_bytes, r.lag_seconds) for r in self.replicas]


class ReplicaBehind(Exception):
    """A new connection to a replica sees less than routing relied on."""
