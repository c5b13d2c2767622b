"""L2: one Redis shared by every worker and node.

A key holds one marker byte and the value list: ``\\x01`` + values for a handle,
``\\x00`` alone for "does not exist" (kept briefly). Reads are coalesced into MGET;
writes are pipelined. A Redis that is slow or down makes L2 a miss, never an error.

Coherence: a write invalidates by setting a short-lived tombstone, deleting the key
and publishing it, then waits until every listener has applied it (each confirms).
Cache fills go through a script that will not SET while the
tombstone lives, so a fill read from SQL before the write but arriving after the
invalidation cannot bring the old value back. One script call fills a batch. Data and
tombstone keys share a hash tag (the handle), so each entry's script call works on one
slot of a Redis Cluster.

``RedisTier`` speaks to one Redis (or a proxy in front of a cluster);
``RedisClusterTier`` (``--redis-cluster``) to a Redis Cluster or Valkey cluster itself:
reads and fills per key in one pipeline per master, tombstones per key in cluster
pipelines, invalidations published on the channel's shard (SPUBLISH from Redis 7), and
a listener that follows the channel's shard when its master fails over.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis import exceptions as rx
from redis.asyncio.client import Pipeline, PubSub
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from .coalesce import Coalescer
from .lean_redis import LeanRedis
from .logs import Repeats

log = logging.getLogger("idnode.l2")

FOUND = b"\x01"
NOT_FOUND = b"\x00"
TOMBSTONE_SECONDS = 5
# KEYS: data and tombstone key of each entry, in pairs; ARGV: its value and TTL, in
# pairs. One call fills a whole batch: a call per key cost the node more CPU in
# redis-py's command packing than the SQL read it caches (profiled on the miss path).
FILL_UNLESS_TOMBSTONED = """
local filled = 0
for i = 1, #KEYS, 2 do
  if redis.call('EXISTS', KEYS[i + 1]) == 0 then
    redis.call('SET', KEYS[i], ARGV[i], 'EX', ARGV[i + 1])
    filled = filled + 1
  end
end
return filled
"""
FILL_SHA = hashlib.sha1(FILL_UNLESS_TOMBSTONED.encode()).hexdigest()  # EVALSHA's name for it
FILL_BATCH = 128  # entries per script call: bounds how long one call holds Redis
# An invalidation on one Redis server: tombstone and delete each key, then publish, in
# one script call per TELL_BATCH keys (the last call publishes). As a pipeline of a SET
# and a DEL per key it cost ~42 ms of client CPU per 2,000 keys in redis-py, most of a
# batch registration's time; as script calls, ~6 ms. A key Redis refuses (out of
# memory, a replica) does not stop the others nor the message: the listeners are told
# all the same and the refusals are counted. KEYS: data and tombstone key pairs; ARGV:
# tombstone TTL, channel ("" for none), message. Returns {listeners, refused}.
TOMBSTONE_AND_PUBLISH = """
local refused = 0
for i = 1, #KEYS, 2 do
  local set = redis.pcall('SET', KEYS[i + 1], '1', 'EX', ARGV[1])
  local del = redis.pcall('DEL', KEYS[i])
  if type(set) == 'table' and set.err or type(del) == 'table' and del.err then
    refused = refused + 1
  end
end
local heard = 0
if ARGV[2] ~= '' then
  heard = redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return {heard, refused}
"""
TELL_BATCH = 1024  # keys per script call: bounds how long one call holds Redis
READS_IN_FLIGHT = 2  # MGETs under way at once; the keys asked meanwhile batch up
# An invalidation message starts with this and a token; each listener pushes onto the
# token's list once it has applied the message, and the writer waits for them.
ACK_MARK = "@ack:"
# Then, when the registry has read replicas, the write's position in the registry's
# history (HandleStore.write_position): listeners read those keys from a replica only
# once it has replayed that far.
POSITION_MARK = "@pos:"
ACK_WAIT = 1.0  # seconds a writer waits for every listener's confirmation
# A listener sends a beat (PING with its send time) on its subscribed connection every
# BEAT_EVERY seconds; the answer comes back behind every message published before it.
# Hearing it back, the worker's L1 may answer until the beat's send time plus LEASE
# (Resolver.renew). LEASE < ACK_WAIT: a listener too far behind to confirm in time has
# lost its lease before the writer stops waiting, so the write's acknowledgement never
# meets an L1 that did not hear of it (the margin covers the loop's turn and clock rate).
BEAT_EVERY = 0.2
LEASE = 0.6
ACK_KEEP = 10  # seconds a confirmation list lives if its writer has gone
# What makes L2 a miss (or an invalidation not told) rather than an error: a cluster
# client's own errors (no node reachable, slots not covered) are not RedisErrors.
# AttributeError too: redis-py 6.4's cluster client raises "'NoneType' object has no
# attribute 'writelines'" when another task's topology refresh disconnects a connection
# with a command in flight (seen during failovers); that is Redis trouble, a miss.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError, AttributeError)


class RedisTier:
    def __init__(
        self,
        url: str,
        *,
        namespace: str = "idnode",
        ttl: int = 3600,
        negative_ttl: int = 5,
        max_batch: int = 256,
        timeout: float = 0.25,
    ) -> None:
        self.url = url
        self.namespace = namespace
        self.tombstone_ttl = TOMBSTONE_SECONDS
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._open(url, timeout)
        self.repeats = Repeats(log)
        self.reads: Coalescer[str, bytes] = Coalescer(
            self._mget, max_batch=max_batch, timeout=timeout, max_inflight=READS_IN_FLIGHT
        )
        self.errors = 0

    def _open(self, url: str, timeout: float) -> None:
        self.client: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=max(timeout, 0.5), socket_connect_timeout=2.0
        )
        self._fill = self.client.register_script(FILL_UNLESS_TOMBSTONED)
        # The miss path's reads and fills, on a connection of their own without
        # redis-py's per-command cost (lean_redis.py); None for a URL it does not speak.
        self._lean = LeanRedis.from_url(url, timeout=max(timeout, 0.5), connect_timeout=2.0)
        self._tell_sha = hashlib.sha1(TOMBSTONE_AND_PUBLISH.encode()).hexdigest()
        # Writers wait on listeners' answers with a blocking pop: a read timeout longer
        # than the wait, on connections of their own.
        self._acks: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=ACK_WAIT + 1.0, socket_connect_timeout=2.0
        )

    async def ping(self) -> None:
        await self.client.ping()

    def data_key(self, key: str) -> str:
        return f"{self.namespace}:h:{{{key}}}"

    def tombstone_key(self, key: str) -> str:
        return f"{self.namespace}:t:{{{key}}}"

    async def _mget(self, keys: list[str]) -> dict[str, bytes]:
        names = [self.data_key(k) for k in keys]
        if self._lean is not None:
            raw = await self._lean.call(b"MGET", *names)
        else:
            raw = await self.client.mget(names)
        return {k: v for k, v in zip(keys, raw, strict=True) if v is not None}

    async def get(self, key: str) -> bytes | None:
        """The stored form (marker + values) or None on a miss or any Redis trouble."""
        try:
            return await self.reads.get(key)
        except FAILURES as exc:
            self.errors += 1
            self.repeats.warning("redis read failed (%s); serving from the registry", exc)
            return None

    async def put_many(self, items: Sequence[tuple[str, bytes | None]]) -> None:
        """Store found (bytes) and not-found (None) answers, each with its TTL."""
        if not items:
            return
        try:
            for start in range(0, len(items), FILL_BATCH):
                keys: list[str] = []
                args: list[bytes | int] = []
                for key, values in items[start : start + FILL_BATCH]:
                    keys += (self.data_key(key), self.tombstone_key(key))
                    if values is None:
                        args += (NOT_FOUND, self.negative_ttl)
                    else:
                        args += (FOUND + values, self.ttl)
                if self._lean is not None:
                    await self._lean.evalsha(FILL_SHA, FILL_UNLESS_TOMBSTONED, keys, args)
                else:
                    await self._fill(keys=keys, args=args)
        except FAILURES as exc:
            self.errors += 1
            self.repeats.warning("redis write failed (%s)", exc)

    @property
    def channel(self) -> str:
        return f"{self.namespace}:invalidate"

    async def invalidate(self, keys: list[str], position: str = "") -> None:
        """Delete the keys, tell every worker, and wait until each listener that heard
        it has dropped the keys from its L1; raises if Redis cannot be told.

        A write must not report success while another worker could still serve the old
        value from Redis or from its L1. PUBLISH says how many listeners got the message;
        each answers on a list once it has applied it (:meth:`listen`), and the writer
        waits for that many answers, at most ACK_WAIT (a listener that slow is logged;
        the write is committed and is acknowledged all the same).
        """
        token = secrets.token_hex(8)
        head = [ACK_MARK + token] + ([POSITION_MARK + position] if position else [])
        try:
            listeners, untold = await self._tell(keys, "\n".join([*head, *keys]))
        except (rx.TimeoutError, TimeoutError):
            # Sent, unanswered: it may have been published all the same, to a listener
            # that has not applied it yet. Answer no sooner than its lease runs out.
            await _wait_out(time.monotonic())
            raise
        told = time.monotonic()  # after the publish: the waits below count from here
        ack = self.ack_key(token)
        try:
            acks = await self._ack_client()
            try:
                for _ in range(listeners):
                    popped = acks.blpop([ack], timeout=ACK_WAIT)
                    if await cast("Awaitable[list[bytes] | None]", popped) is None:
                        self.repeats.warning(
                            "a node's invalidation listener did not confirm within %.1fs",
                            ACK_WAIT,
                        )
                        # Redis times the wait by its own clock (a step of it cuts the
                        # wait short): the rest is waited out here.
                        await _wait_out(told)
                        break
            finally:
                await acks.delete(ack)
        except FAILURES:
            # Not waited for: answer no sooner than a listener that did not hear it has
            # lost its lease (LEASE), as when it does not confirm.
            await _wait_out(told)
            raise
        if untold is not None:  # the listeners heard it, but Redis may hold the old value
            raise untold

    async def _ack_client(self) -> aioredis.Redis | RedisCluster:
        return self._acks

    async def _tell(self, keys: list[str], message: str) -> tuple[int, Exception | None]:
        """Tombstone and delete the keys, publish ``message``: how many listeners heard
        it, and what kept the keys from being deleted when the message went all the same
        (raised once the listeners confirmed)."""
        try:
            answers = await self._tell_once(keys, message)
        except NoScriptError:  # Redis restarted or its scripts were flushed: load it again
            await self.client.script_load(TOMBSTONE_AND_PUBLISH)
            answers = await self._tell_once(keys, message)
        refused = sum(int(a[1]) for a in answers)
        untold = None
        if refused:
            untold = RedisError(f"Redis refused the tombstones or deletes of {refused} key(s)")
        return int(answers[-1][0]), untold

    async def _tell_once(self, keys: list[str], message: str) -> list[list[int]]:
        """The script calls of one invalidation in one pipeline, by its SHA (redis-py's
        Script would ask SCRIPT EXISTS first: a second round trip on every write)."""
        calls = [keys[i : i + TELL_BATCH] for i in range(0, len(keys), TELL_BATCH)] or [[]]
        async with self.client.pipeline(transaction=False) as p:
            for n, part in enumerate(calls):
                last = n == len(calls) - 1
                pairs: list[str] = []
                for k in part:
                    pairs += (self.data_key(k), self.tombstone_key(k))
                args = [
                    str(self.tombstone_ttl),
                    self.channel if last else "",
                    message if last else "",
                ]
                p.evalsha(self._tell_sha, len(pairs), *pairs, *args)
            return cast("list[list[int]]", await p.execute())

    async def server_run(self) -> bytes:
        """This Redis server's run id: it changes when the server restarts (and then
        holds what its persistence had saved, however old)."""
        info = await self.client.info("server")
        return str(info.get("run_id", "")).encode()

    async def clear_since(self, run: bytes) -> int:
        """Delete what a Redis whose run was ``run`` when last caught up may hold from an
        unknown time: here, everything (one server)."""
        return await self.clear()

    async def clear(self) -> int:
        """Delete every cached handle of this namespace; how many went."""
        gone = 0
        async for batch in _batches(self.client.scan_iter(match=self.data_key("*"), count=1000)):
            gone += int(await self.client.unlink(*batch))
        return gone

    def ack_key(self, token: str) -> str:
        return f"{self.namespace}:ack:{token}"

    async def listen(
        self,
        forget: Callable[[list[str], str], None],
        subscribed: Callable[[], None] | None = None,
        lost: Callable[[], None] | None = None,
        renew: Callable[[float], None] | None = None,
    ) -> None:
        """Apply invalidations published by any worker, until cancelled; reconnects.
        ``forget`` gets the keys and the write's registry position ("" if none).

        ``lost`` is called when the channel is lost (what was published meanwhile was
        not heard), ``subscribed`` once it listens again: the core then catches up from
        the registry's change feed before it trusts Redis and L1 again. ``renew`` gets
        the time (time.monotonic()) until which L1 may answer, each time a beat comes
        back (BEAT_EVERY, LEASE)."""
        # Its own connection without a read timeout: a quiet channel is not a dead one.
        # Named, so that CLIENT LIST tells the node's listeners apart.
        listener: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            self.url,
            socket_connect_timeout=2.0,
            health_check_interval=30,
            client_name=f"idnode-listener:{self.namespace}",
        )
        while True:
            pubsub = listener.pubsub()
            parts: list[asyncio.Task[None]] = []
            try:
                await pubsub.subscribe(self.channel)
                if subscribed is not None:
                    subscribed()
                loop = asyncio.get_running_loop()
                parts.append(loop.create_task(self._read(pubsub, forget, renew)))
                if renew is not None:
                    parts.append(loop.create_task(_beat(pubsub)))
                # The reader and the beats end only when the connection fails. redis-py
                # reconnects a PubSub and subscribes it again before it raises, or on its
                # next read when a beat's send found the connection broken: whichever
                # part fails first, the gap is reported and this PubSub is closed.
                done, _ = await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
                for t in done:
                    t.result()
                raise RedisError("the invalidation channel's subscription ended")
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if lost is not None:
                    lost()
                self.repeats.warning("invalidation channel lost (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)
            finally:
                for t in parts:
                    t.cancel()
                await asyncio.gather(*parts, return_exceptions=True)
                # Else it stays subscribed on the connection redis-py made again: a listener
                # nobody reads, counted by every PUBLISH, whose writers then wait ACK_WAIT.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2.0):
                        await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(
        self,
        pubsub: PubSub,
        forget: Callable[[list[str], str], None],
        renew: Callable[[float], None] | None,
    ) -> None:
        """Apply each message of the subscription; renew the lease with each beat."""
        async for msg in pubsub.listen():
            kind = msg.get("type")
            if kind == "message":
                await self._heard(msg["data"], forget)
            elif kind == "pong" and renew is not None:
                _heard_beat(msg["data"], renew)

    async def _heard(self, data: object, forget: Callable[[list[str], str], None]) -> None:
        """Apply one invalidation message, then confirm it to its writer."""
        text = data.decode() if isinstance(data, bytes) else str(data)
        lines = [k for k in text.split("\n") if k]
        token = ""
        if lines and lines[0].startswith(ACK_MARK):
            token = lines.pop(0)[len(ACK_MARK) :]
        position = ""
        if lines and lines[0].startswith(POSITION_MARK):
            position = lines.pop(0)[len(POSITION_MARK) :]
        forget(lines, position)
        if token:  # applied: the writer may answer now
            try:
                await self._confirm(self.ack_key(token))
            except FAILURES as exc:  # applied all the same; the writer waits, then goes on
                self.repeats.warning("cannot confirm an invalidation to its writer (%s)", exc)

    async def _confirm(self, ack: str) -> None:
        async with self.client.pipeline(transaction=False) as p:
            p.rpush(ack, b"1")
            p.expire(ack, ACK_KEEP)
            await p.execute()

    async def close(self) -> None:
        await self.reads.drain()
        if self._lean is not None:
            await self._lean.close()
        await self.client.aclose()
        await self._acks.aclose()


async def _wait_out(told: float) -> None:
    """Sleep until ACK_WAIT after ``told`` (time.monotonic(), once the invalidation was
    published or may have been): by then a listener that has not applied it has lost
    its lease."""
    await asyncio.sleep(max(0.0, told + ACK_WAIT - time.monotonic()))


async def _beat(pubsub: PubSub) -> None:
    """Send a beat (PING with its send time) every BEAT_EVERY on the subscribed
    connection itself, until it fails. Not through PubSub.ping: on a failure that one
    reconnects and subscribes again behind the reader's back."""
    conn = pubsub.connection
    while True:
        if conn is None or conn is not pubsub.connection or not conn.is_connected:
            raise rx.ConnectionError("the subscribed connection was lost")
        await conn.send_command("PING", repr(time.monotonic()), check_health=False)
        await asyncio.sleep(BEAT_EVERY)


def _heard_beat(data: object, renew: Callable[[float], None]) -> None:
    """A PONG came back: if it is a beat, L1 may answer until its send time + LEASE.
    (Other PONGs, such as redis-py's health checks, carry no time.)"""
    try:
        sent = float(data.decode() if isinstance(data, bytes) else str(data))
    except ValueError:
        return
    renew(sent + LEASE)


async def _batches(keys: AsyncIterator[bytes], size: int = 1000) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for k in keys:
        batch.append(k)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


# Sharded pub/sub (SSUBSCRIBE, SPUBLISH) came with Redis 7 (Valkey has it too): a message
# goes to the channel's shard only instead of over the whole cluster bus.
SHARDED_PUBSUB_SINCE = (7, 0)
REPLICA_WAIT_MS = 100  # an invalidation waits this long for a replica to hold it
# The listener PINGs its subscribed connection every BEAT_EVERY (its beats) and counts
# the channel lost when it has heard nothing for this long: a master that froze or was
# cut off sends no reset, and kernel keepalive waits hours.
LISTEN_PING_EVERY = 2.0
CONFIRM_WAIT = 0.5  # seconds a listener spends confirming one invalidation, at most
# A writer tries to publish an invalidation this long (seconds) before it gives up: by
# then a listener whose master stopped answering has lost the channel (LISTEN_PING_EVERY).
PUBLISH_WAIT = 2 * LISTEN_PING_EVERY + 1.0
PUBLISH_RETRY = 0.1  # seconds between attempts to publish
CONFIRMS_IN_FLIGHT = 256  # confirmations under way at once; past it one is dropped (logged)
# What says the client's map of the cluster is out of date (worth one more try on a fresh
# one): a master gone, a slot moved, a failover under way.
MOVED_OR_GONE = (
    rx.ConnectionError,
    rx.TimeoutError,
    rx.ClusterDownError,
    rx.TryAgainError,
    rx.MovedError,
)


class RedisClusterTier(RedisTier):
    """The same tier on a Redis Cluster: ``url`` names any node; the client learns the
    rest and follows MOVED/ASK and failovers.

    Keys are spread over every slot by their hash tag (the handle), so one batch of keys
    touches about as many slots as it has keys, and a multi-key command may not span
    slots: reads are a GET per key and fills a script call per key (its data and
    tombstone key share a slot), each master's in one pipelined round trip, the masters
    asked at once. Invalidations go through redis-py's cluster pipeline, which follows
    MOVED and ASK.

    An invalidation is acknowledged only once each master holding its keys has passed
    the tombstones and deletes to a replica (WAIT), so a failover cannot bring back a
    value a write has replaced; a master whose replica does not confirm is logged. It
    is then published on the master of the channel's slot (SPUBLISH, or PUBLISH before
    Redis 7, sent to that master so that its count of listeners is the writer's). The
    listener follows that master: when it dies or gives up the slot, the listener asks
    the cluster where the slot is now, reports the gap (``lost``, then ``subscribed``)
    and the core catches up from the change feed. An invalidation is published even when
    a master could not take its tombstones (the writer is then told, and catches up), and
    batches that find a master new since they last looked report the same gap and read
    nothing until the new masters are emptied (:meth:`_same_masters`).
    """

    def _open(self, url: str, timeout: float) -> None:
        self.cluster = RedisCluster.from_url(
            url, socket_timeout=max(timeout, 0.5), socket_connect_timeout=2.0
        )
        self._ack_clients: dict[str, aioredis.Redis] = {}  # writers' waits, by channel master
        # For callers handed the tier's client (the shared rate limits and quotas run
        # one-key EVALs, which the cluster client routes by key): every method here
        # uses self.cluster.
        self.client = self.cluster  # type: ignore[assignment]
        self._lean = None  # reads and fills go per master, through redis-py
        self._sharded: bool | None = None  # known once a node of the cluster answered
        self._masters: dict[str, aioredis.Redis] = {}  # a client per master, for batches
        self._writers: dict[str, aioredis.Redis] = {}  # and for tombstones, confirmations
        self._timeout = max(timeout, 0.5)
        self._stale = False  # a batch met MOVED or a master down: read the topology anew
        self._masters_seen: frozenset[str] = frozenset()
        self._seen_run = b""  # the masters' run ids (server_run) when the batches last looked
        # The listener's callbacks, also told of a change of masters the batches find.
        self._lost: Callable[[], None] | None = None
        self._subscribed: Callable[[], None] | None = None
        self._listening = False
        self._settling: asyncio.Task[None] | None = None  # emptying new masters
        # One refresh of the masters at a time: a second batch must not read a master
        # the first just found new, before it is emptied.
        self._refresh = asyncio.Lock()
        # Each master's run id when the batches last looked: a connection to a master
        # whose run id differs (restarted in place, its data from an unknown time) is
        # refused before any read goes over it.
        self._runs: dict[str, str] = {}
        self._confirms: set[asyncio.Task[None]] = set()

    async def ping(self) -> None:
        await self.cluster.initialize()
        await self.cluster.ping(target_nodes=RedisCluster.PRIMARIES)

    async def _mget(self, keys: list[str]) -> dict[str, bytes]:
        replies = await self._on_masters(keys, lambda p, k: p.get(self.data_key(k)))
        found = {k: v for k, v in replies.items() if isinstance(v, bytes)}
        failed = next((v for v in replies.values() if isinstance(v, Exception)), None)
        if failed is not None:  # the keys of a master that failed are misses; logged
            self.errors += 1
            self.repeats.warning("redis read failed on part of the cluster (%s)", failed)
        return found

    async def put_many(self, items: Sequence[tuple[str, bytes | None]]) -> None:
        if not items:
            return
        values = {key: (NOT_FOUND, self.negative_ttl) if v is None else (FOUND + v, self.ttl)
                  for key, v in items}  # fmt: skip

        def fill(p: Pipeline, key: str) -> None:
            value, ttl = values[key]
            p.evalsha(FILL_SHA, 2, self.data_key(key), self.tombstone_key(key), value, ttl)  # type: ignore[arg-type]

        try:
            replies = await self._on_masters(list(values), fill)
            unknown = [k for k, r in replies.items() if isinstance(r, NoScriptError)]
            if unknown:  # a master that never saw the script (new, or restarted)
                await self.cluster.execute_command(
                    "SCRIPT", "LOAD", FILL_UNLESS_TOMBSTONED, target_nodes=RedisCluster.PRIMARIES
                )
                replies.update(await self._on_masters(unknown, fill))
            failed = next((r for r in replies.values() if isinstance(r, Exception)), None)
            if failed is not None:
                raise failed
        except FAILURES as exc:
            self.errors += 1
            self.repeats.warning("redis write failed (%s)", exc)

    async def _on_masters(
        self, keys: list[str], queue: Callable[[Pipeline, str], object]
    ) -> dict[str, object]:
        """Each key's command (``queue`` adds it to a pipeline) sent to the master of its
        slot, one pipeline per master, the masters at once; each key's reply, or the
        exception of its master (unreachable, or MOVED: the slot is elsewhere now, and the
        topology is read again before the next call).

        Pipelines of plain commands on each master's own client: redis-py's cluster
        pipeline spends more CPU per command than the round trips it saves (measured with
        loadtest/l2_bench.py)."""
        await self._same_masters()
        try:
            return await self._per_master(keys, queue)
        except asyncio.CancelledError:
            # Cancelled mid-reply (the batch's timeout): the connection is dropped, and
            # whatever the master became meanwhile is looked at before the next batch.
            self._stale = True
            raise

    async def _per_master(
        self, keys: list[str], queue: Callable[[Pipeline, str], object]
    ) -> dict[str, object]:
        """:meth:`_on_masters` without the check of the masters (writes need none)."""
        slot_of = self.cluster.nodes_manager.get_node_from_slot
        groups: dict[str, list[str]] = {}
        for k in keys:
            groups.setdefault(slot_of(key_slot(self.data_key(k).encode())).name, []).append(k)

        async def on(name: str, group: list[str]) -> list[object]:
            async with self._master(name).pipeline(transaction=False) as p:
                for k in group:
                    queue(p, k)
                return list(await p.execute(raise_on_error=False))

        replies: dict[str, object] = {}
        answers = await asyncio.gather(
            *(on(n, g) for n, g in groups.items()), return_exceptions=True
        )
        for group, answer in zip(groups.values(), answers, strict=True):
            if isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # cancelled
                self._stale = True
                replies.update(dict.fromkeys(group, answer))
                continue
            for k, r in zip(group, answer, strict=True):
                if isinstance(r, rx.ResponseError) and str(r).startswith(("MOVED", "ASK")):
                    self._stale = True
                replies[k] = r
        return replies

    async def _same_masters(self) -> None:
        """Before a batch: raise (a miss) unless the masters are the ones seen before.

        A master new since (a promoted replica, a restarted master) may hold a value that
        an invalidation it never took replaced (its old master was down). A worker's L1
        meanwhile heard the invalidation, and Redis is now the one place the old value
        lives: the change is reported like a lost channel, and the core uses no cache
        until it has caught up (emptying the new masters). Cheap while nothing changed:
        the run ids are read again only after a batch met an error, MOVED, a cancellation
        or a new connection to a master (:meth:`_checked_connect`), or another path (the
        listener, an invalidation) refreshed the client's topology."""
        if self._settling is None and not self._stale:
            await self.cluster.initialize()
            masters = frozenset(n.name for n in self.cluster.get_primaries())
            if masters == self._masters_seen:
                return
        async with self._refresh:  # checked again inside: another batch may have looked
            if self._settling is not None:
                if not self._settling.done():
                    raise RedisClusterException("emptying the redis masters that changed")
                self._settling = None
            await self.cluster.initialize()
            masters = frozenset(n.name for n in self.cluster.get_primaries())
            if not self._stale and masters == self._masters_seen:
                return
            if self._stale:
                await self.cluster.nodes_manager.initialize()
            self._stale = False
            try:
                runs = await self._master_runs()  # fails while a master is down: misses
            except BaseException:
                self._stale = True  # not looked at: look again next time
                raise
            run = ",".join(sorted(runs.values())).encode()
            self._masters_seen = frozenset(runs)
            seen, self._seen_run = self._seen_run, run
            self._runs = runs
            if seen and run != seen:
                log.warning("redis cluster masters changed: caches unused until caught up")
                # No batch reads until the new masters are empty (not left to the catch-up
                # alone: it empties them only if it had caught up once before).
                self._settling = asyncio.get_running_loop().create_task(self._settle(seen))
                if self._lost is not None:
                    self._lost()
                if self._listening and self._subscribed is not None:
                    self._subscribed()  # listening still: catch up now
                raise RedisClusterException("redis cluster masters changed")

    async def _master_runs(self) -> dict[str, str]:
        """Each master's run id, by ``host:port``."""
        await self.cluster.initialize()
        infos = await self.cluster.info("server", target_nodes=RedisCluster.PRIMARIES)
        return {str(name): str(i.get("run_id", "")) for name, i in infos.items()}

    async def _settle(self, run: bytes) -> None:
        while True:
            try:
                gone = await self.clear_since(run)
            except FAILURES as exc:
                self.repeats.warning("cannot empty the redis masters that changed yet (%s)", exc)
                await asyncio.sleep(1.0)
                continue
            log.warning("emptied the redis masters that changed (%d handles)", gone)
            return

    def _master(self, name: str, *, checked: bool = True) -> aioredis.Redis:
        """A client of one master, without retries (redis-py's default reconnects and
        sends again, hiding a restart). ``checked``, the batches' (reads and fills): its
        connections are refused until :meth:`_checked_connect` has seen the run the
        batches last saw there. Unchecked, for tombstones and confirmations: those are
        right on any master, restarted or not."""
        clients = self._masters if checked else self._writers
        client = clients.get(name)
        if client is None:
            host, port = name.rsplit(":", 1)
            client = clients[name] = aioredis.Redis(
                host=host,
                port=int(port),
                socket_timeout=self._timeout,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),
                redis_connect_func=self._checked_connect if checked else None,
            )
        return client

    async def _checked_connect(self, conn: Connection) -> None:
        """Every new connection of a batch client: refused (a miss, the masters looked
        at again) unless its server runs the run id the batches last saw there. A master
        restarted in place keeps its address and comes back with whatever its
        persistence saved, however old; nothing else would tell."""
        await conn.on_connect()
        await conn.send_command("INFO", "server")
        info = await conn.read_response()
        text = info.decode() if isinstance(info, bytes) else str(info)
        run = next((ln[7:].strip() for ln in text.splitlines() if ln.startswith("run_id:")), "")
        name = f"{conn.host}:{conn.port}"
        if not run or self._runs.get(name) != run:
            self._stale = True
            raise rx.ConnectionError(f"redis master {name} is new to this worker (run {run})")

    async def _tell(self, keys: list[str], message: str) -> tuple[int, Exception | None]:
        """Tombstones and deletes first; the message is published even when a master
        could not take them (it is down): the other workers must drop the keys from their
        L1 whatever Redis holds. The failure is then raised to the writer, whose worker
        stops trusting the caches until it has caught up (deleting the keys again)."""
        untold: Exception | None = None
        try:
            await self._delete(keys)
        except MOVED_OR_GONE as exc:
            # A master gone since the client last looked: ask the cluster where the
            # slots are now and say it again (tombstones and deletes are idempotent).
            self.repeats.log(
                logging.INFO,
                "redis cluster changed (%s); invalidating again on its new topology",
                exc,
            )
            try:
                await self.cluster.nodes_manager.initialize()
                await self._delete(keys)
            except FAILURES as again:
                untold = again
        except FAILURES as exc:
            untold = exc
        return await self._publish(message), untold

    async def _delete(self, keys: list[str]) -> None:
        """Tombstones and deletes, each master's in one pipeline on one connection, then
        WAIT on that same connection (WAIT counts the writes of its own connection: on
        another, or on another master after a retry, it would confirm nothing)."""
        await self.cluster.initialize()

        def tombstone(p: Pipeline, k: str) -> None:
            p.set(self.tombstone_key(k), b"1", ex=self.tombstone_ttl)
            p.delete(self.data_key(k))

        slot_of = self.cluster.nodes_manager.get_node_from_slot
        groups: dict[str, list[str]] = {}
        for k in keys:
            groups.setdefault(slot_of(key_slot(self.data_key(k).encode())).name, []).append(k)

        async def on(name: str, group: list[str]) -> list[object]:
            async with self._master(name, checked=False).pipeline(transaction=False) as p:
                for k in group:
                    tombstone(p, k)
                p.execute_command("WAIT", 1, REPLICA_WAIT_MS)
                return list(await p.execute(raise_on_error=False))

        answers = await asyncio.gather(*(on(n, g) for n, g in groups.items()),
                                       return_exceptions=True)  # fmt: skip
        unconfirmed = False
        for answer in answers:
            if isinstance(answer, BaseException):
                self._stale = True
                raise answer
            for r in answer[:-1]:
                if isinstance(r, rx.ResponseError):
                    self._stale = True
                    if str(r).startswith(("MOVED", "ASK")):  # the slot is elsewhere now
                        raise rx.ConnectionError(f"a slot moved during an invalidation ({r})")
                    raise r
            unconfirmed = unconfirmed or answer[-1] == 0
        if unconfirmed:
            self.repeats.warning(
                "a redis master has no replica that confirmed an invalidation within %d ms; "
                "a failover of it now could bring back a replaced value",
                REPLICA_WAIT_MS,
            )

    async def _publish(self, message: str) -> int:
        """Publish ``message``, trying again on a fresh view of the cluster until it is
        published or PUBLISH_WAIT has passed.

        The write is committed and will be acknowledged: if the message is not published,
        a listener that did not lose the channel keeps the replaced value in its L1 (a
        writer's catch-up tells it only later). So a failure is not given up on while the
        channel's master may still be there: past PUBLISH_WAIT, every listener on a master
        that stopped answering has lost the channel itself (it PINGs a quiet one) and
        catches up from the change feed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_WAIT
        while True:
            try:
                return await self._publish_once(message)
            except Exception as exc:  # whatever it was, the listeners were not told
                if loop.time() >= deadline:
                    log.error(
                        "cannot publish an invalidation within %gs (%s); the listeners "
                        "that did not lose the channel were not told of this write",
                        PUBLISH_WAIT,
                        exc,
                    )
                    raise
                self.repeats.warning("cannot publish an invalidation (%s); trying again", exc)
            await asyncio.sleep(PUBLISH_RETRY)
            try:  # the channel's master may have changed: publish on the slot's master now
                await self.cluster.nodes_manager.initialize()
            except FAILURES as exc:
                self.repeats.warning("cannot read the redis cluster's topology (%s)", exc)

    async def _publish_once(self, message: str) -> int:
        # On a plain client of the channel's master, not the cluster client: redis-py's
        # cluster client disconnects a node's connections when any task refreshes its
        # topology (nodes_manager.initialize), under a command in flight there; a PUBLISH
        # it cut failed with an AttributeError and the write was acknowledged untold.
        node = await self._channel_node()
        client = self._master(node.name, checked=False)
        if not await self._sharded_pubsub(node):
            return int(await client.publish(self.channel, message))  # goes over the bus
        # A demoted master (a failover while it was frozen or cut off, that this client's
        # map of the cluster has not seen) takes SPUBLISH without error and tells none of
        # the listeners, who follow the new master: ask its role in the same round trip.
        async with client.pipeline(transaction=False) as p:
            p.execute_command("ROLE")
            p.spublish(self.channel, message)
            role, heard = await p.execute()
        if not role or role[0] not in (b"master", "master"):
            raise rx.ConnectionError(f"{node.name} is no longer the channel's master")
        return int(heard)

    async def _ack_client(self) -> aioredis.Redis:
        # The channel's master, where the confirmations are (ack_key): a client of its
        # own, no cluster client (whose start asks a default node, which may be down).
        node = await self._channel_node()
        client = self._ack_clients.get(node.name)
        if client is None:
            client = self._ack_clients[node.name] = aioredis.Redis(
                host=node.host,
                port=int(node.port),
                socket_timeout=ACK_WAIT + 1.0,
                socket_connect_timeout=2.0,
                retry=Retry(NoBackoff(), 0),
            )
        return client

    async def _channel_node(self) -> ClusterNode:
        await self.cluster.initialize()
        return self._node_of(self.channel)

    def _node_of(self, key: str) -> ClusterNode:
        node = self.cluster.get_node_from_key(key)
        if node is None:
            raise RedisClusterException(f"no master serves the slot of {key}")
        return node

    async def _sharded_pubsub(self, node: ClusterNode) -> bool:
        if self._sharded is None:
            info = await self._master(node.name, checked=False).info("server")
            version = str(info.get("redis_version", "0"))
            parts = tuple(int(x) for x in version.split(".")[:2] if x.isdigit())
            self._sharded = parts >= SHARDED_PUBSUB_SINCE
        return self._sharded

    def ack_key(self, token: str) -> str:
        # In the channel's slot: on the master that took the message, so a confirmation
        # needs no other master to be up (a random slot's master may be down).
        return f"{{{self.channel}}}:ack:{token}"

    async def _confirm(self, ack: str) -> None:
        """Sent off the listener's read loop, bounded by CONFIRM_WAIT: a slow
        confirmation must not hold back the next invalidations (their writers wait too)."""
        if len(self._confirms) >= CONFIRMS_IN_FLIGHT:
            self.repeats.warning("too many invalidation confirmations under way; one dropped")
            return
        task = asyncio.get_running_loop().create_task(self._confirm_now(ack))
        self._confirms.add(task)
        task.add_done_callback(self._confirms.discard)

    async def _confirm_now(self, ack: str) -> None:
        try:
            node = self._node_of(ack)
            async with asyncio.timeout(CONFIRM_WAIT):
                async with self._master(node.name, checked=False).pipeline(transaction=False) as p:
                    p.rpush(ack, b"1")
                    p.expire(ack, ACK_KEEP)
                    await p.execute()
        except FAILURES as exc:  # applied all the same (a timeout is one)
            self.repeats.warning("cannot confirm an invalidation to its writer (%s)", exc)

    async def server_run(self) -> bytes:
        """The run ids of the masters: a master that restarted (its data as saved, from
        an unknown time) or a replica that took over shows as a run id not seen before."""
        return ",".join(sorted((await self._master_runs()).values())).encode()

    async def clear_since(self, run: bytes) -> int:
        """Empty only the masters whose run id is new since ``run``: the other shards
        were in step all along."""
        seen = set(run.decode().split(","))
        await self.cluster.initialize()
        infos = await self.cluster.info("server", target_nodes=RedisCluster.PRIMARIES)
        fresh = [name for name, i in infos.items() if str(i.get("run_id", "")) not in seen]
        return await self._clear_nodes([n for n in self.cluster.get_primaries() if n.name in fresh])

    async def clear(self) -> int:
        await self.cluster.initialize()
        return await self._clear_nodes(self.cluster.get_primaries())

    async def _clear_nodes(self, nodes: list[ClusterNode]) -> int:
        gone = 0
        for node in nodes:
            r = aioredis.Redis(host=node.host, port=int(node.port), socket_connect_timeout=2.0)
            try:
                async for batch in _batches(r.scan_iter(match=self.data_key("*"), count=1000)):
                    # One UNLINK per key: the keys of a batch are in many slots.
                    async with r.pipeline(transaction=False) as p:
                        for k in batch:
                            p.unlink(k)
                        gone += sum(int(n) for n in await p.execute())
            finally:
                await r.aclose()
        return gone

    async def listen(
        self,
        forget: Callable[[list[str], str], None],
        subscribed: Callable[[], None] | None = None,
        lost: Callable[[], None] | None = None,
        renew: Callable[[float], None] | None = None,
    ) -> None:
        """As :meth:`RedisTier.listen`, on the master of the channel's slot, found anew
        after every loss (the cluster's topology refreshed)."""
        self._lost, self._subscribed = lost, subscribed
        refresh = False
        while True:
            conn: Connection | None = None
            try:
                if refresh:
                    await self.cluster.nodes_manager.initialize()
                node = await self._channel_node()
                sharded = await self._sharded_pubsub(node)
                # Its own connection. A master that froze or was cut off sends no reset
                # (and kernel keepalive waits hours): the listener's beats (a PING every
                # BEAT_EVERY) are answered by a live master, and LISTEN_PING_EVERY
                # without a word loses the channel.
                conn = Connection(
                    host=node.host, port=node.port, socket_connect_timeout=2.0,
                    socket_keepalive=True,
                )  # fmt: skip
                await conn.connect()  # type: ignore[no-untyped-call]
                await conn.send_command("SSUBSCRIBE" if sharded else "SUBSCRIBE", self.channel)
                heard = beat = time.monotonic()
                while True:
                    now = time.monotonic()
                    if now - beat >= BEAT_EVERY:
                        await conn.send_command("PING", repr(now))
                        beat = now
                    # A timeout here returns None and keeps the connection (and what
                    # part of a reply was read: the parser resumes).
                    reply = await conn.read_response(timeout=BEAT_EVERY)
                    if reply is None:
                        # Judged after a read, so that a stall of this worker's own loop
                        # is not taken for the master's silence.
                        if time.monotonic() - heard > LISTEN_PING_EVERY:
                            raise rx.TimeoutError(
                                f"{node.name} did not answer a PING within {LISTEN_PING_EVERY:g}s"
                            )
                        continue
                    heard = time.monotonic()  # any word from the master says it is there
                    if not isinstance(reply, list) or not reply:
                        continue
                    kind = bytes(reply[0]).lower()
                    if kind == b"pong":
                        if renew is not None and len(reply) > 1:
                            _heard_beat(reply[1], renew)
                    elif kind in (b"ssubscribe", b"subscribe"):
                        log.info("listening for invalidations on %s (%s)", node.name, kind.decode())
                        self._listening = True
                        if subscribed is not None:
                            subscribed()
                    elif kind in (b"smessage", b"message"):
                        await self._heard(reply[2], forget)
                    elif kind in (b"sunsubscribe", b"unsubscribe"):
                        # The node gave up the channel's slot (failover, resharding).
                        raise RedisError(f"{node.name} no longer serves the channel's slot")
            except asyncio.CancelledError:
                raise
            except FAILURES as exc:
                refresh = True
                self._listening = False
                if lost is not None:
                    lost()
                self.repeats.warning("invalidation channel lost (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)
            finally:
                if conn is not None:
                    await conn.disconnect()

    async def close(self) -> None:
        await self.reads.drain()
        if self._settling is not None:
            self._settling.cancel()
            await asyncio.gather(self._settling, return_exceptions=True)
        for task in list(self._confirms):
            task.cancel()
        await asyncio.gather(*self._confirms, return_exceptions=True)
        await self.cluster.aclose()
        for client in [*self._masters.values(), *self._writers.values()]:
            await client.aclose()
        for client in self._ack_clients.values():
            await client.aclose()
