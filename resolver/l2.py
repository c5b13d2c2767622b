"""L2: one Redis shared by every worker and node.

A key holds one marker byte and the value list: ``\\x01`` + values for a handle,
``\\x00`` alone for "does not exist" (kept briefly). Reads are coalesced into MGET;
writes are pipelined. A Redis that is slow or down makes L2 a miss, never an error.

Coherence: a write invalidates by setting a short-lived tombstone, deleting the key
and publishing it, then waits until every listener has applied it (each confirms).
Cache fills go through a script that will not SET while the
tombstone lives, so a fill read from SQL before the write but arriving after the
invalidation cannot bring the old value back. One script call fills a batch. Data and
tombstone keys share a hash tag, so a Redis Cluster client could split a batch by slot;
this one speaks to a single Redis (or a proxy in front of a cluster).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import cast

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from .coalesce import Coalescer
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
FILL_BATCH = 128  # entries per script call: bounds how long one call holds Redis
READS_IN_FLIGHT = 2  # MGETs under way at once; the keys asked meanwhile batch up
# An invalidation message starts with this and a token; each listener pushes onto the
# token's list once it has applied the message, and the writer waits for them.
ACK_MARK = "@ack:"
ACK_WAIT = 1.0  # seconds a writer waits for every listener's confirmation
ACK_KEEP = 10  # seconds a confirmation list lives if its writer has gone


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
        self.client: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=max(timeout, 0.5), socket_connect_timeout=2.0
        )
        self._fill = self.client.register_script(FILL_UNLESS_TOMBSTONED)
        # Writers wait on listeners' answers with a blocking pop: a read timeout longer
        # than the wait, on connections of their own.
        self._acks: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            url, socket_timeout=ACK_WAIT + 1.0, socket_connect_timeout=2.0
        )
        self.repeats = Repeats(log)
        self.reads: Coalescer[str, bytes] = Coalescer(
            self._mget, max_batch=max_batch, timeout=timeout, max_inflight=READS_IN_FLIGHT
        )
        self.errors = 0

    async def ping(self) -> None:
        await self.client.ping()

    def data_key(self, key: str) -> str:
        return f"{self.namespace}:h:{{{key}}}"

    def tombstone_key(self, key: str) -> str:
        return f"{self.namespace}:t:{{{key}}}"

    async def _mget(self, keys: list[str]) -> dict[str, bytes]:
        raw = await self.client.mget([self.data_key(k) for k in keys])
        return {k: v for k, v in zip(keys, raw, strict=True) if v is not None}

    async def get(self, key: str) -> bytes | None:
        """The stored form (marker + values) or None on a miss or any Redis trouble."""
        try:
            return await self.reads.get(key)
        except (RedisError, OSError, TimeoutError) as exc:
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
                await self._fill(keys=keys, args=args)
        except (RedisError, OSError, TimeoutError) as exc:
            self.errors += 1
            self.repeats.warning("redis write failed (%s)", exc)

    @property
    def channel(self) -> str:
        return f"{self.namespace}:invalidate"

    async def invalidate(self, keys: list[str]) -> None:
        """Delete the keys, tell every worker, and wait until each listener that heard
        it has dropped the keys from its L1; raises if Redis cannot be told.

        A write must not report success while another worker could still serve the old
        value from Redis or from its L1. PUBLISH says how many listeners got the message;
        each answers on a list once it has applied it (:meth:`listen`), and the writer
        waits for that many answers, at most ACK_WAIT (a listener that slow is logged;
        the write is committed and is acknowledged all the same).
        """
        token = secrets.token_hex(8)
        async with self.client.pipeline(transaction=False) as p:
            for k in keys:
                p.set(self.tombstone_key(k), b"1", ex=self.tombstone_ttl)
                p.delete(self.data_key(k))
            p.publish(self.channel, "\n".join([ACK_MARK + token, *keys]))
            listeners = int((await p.execute())[-1])
        ack = self.ack_key(token)
        try:
            for _ in range(listeners):
                popped = self._acks.blpop([ack], timeout=ACK_WAIT)
                if await cast("Awaitable[list[bytes] | None]", popped) is None:
                    self.repeats.warning(
                        "a node's invalidation listener did not confirm within %.1fs", ACK_WAIT
                    )
                    break
        finally:
            await self.client.delete(ack)

    async def server_run(self) -> bytes:
        """This Redis server's run id: it changes when the server restarts (and then
        holds what its persistence had saved, however old)."""
        info = await self.client.info("server")
        return str(info.get("run_id", "")).encode()

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
        forget: Callable[[list[str]], None],
        subscribed: Callable[[], None] | None = None,
        lost: Callable[[], None] | None = None,
    ) -> None:
        """Apply invalidations published by any worker, until cancelled; reconnects.

        ``lost`` is called when the channel is lost (what was published meanwhile was
        not heard), ``subscribed`` once it listens again: the core then catches up from
        the registry's change feed before it trusts Redis and L1 again."""
        # Its own connection without a read timeout: a quiet channel is not a dead one.
        listener: aioredis.Redis = aioredis.from_url(  # type: ignore[no-untyped-call]
            self.url, socket_connect_timeout=2.0, health_check_interval=30
        )
        while True:
            try:
                pubsub = listener.pubsub()
                await pubsub.subscribe(self.channel)
                if subscribed is not None:
                    subscribed()
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        data = msg["data"]
                        text = data.decode() if isinstance(data, bytes) else str(data)
                        lines = [k for k in text.split("\n") if k]
                        token = ""
                        if lines and lines[0].startswith(ACK_MARK):
                            token = lines.pop(0)[len(ACK_MARK) :]
                        forget(lines)
                        if token:  # applied: the writer may answer now
                            async with self.client.pipeline(transaction=False) as p:
                                p.rpush(self.ack_key(token), b"1")
                                p.expire(self.ack_key(token), ACK_KEEP)
                                await p.execute()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                if lost is not None:
                    lost()
                self.repeats.warning("invalidation channel lost (%s); retrying in 1s", exc)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        await self.reads.drain()
        await self.client.aclose()
        await self._acks.aclose()


async def _batches(keys: AsyncIterator[bytes], size: int = 1000) -> AsyncIterator[list[bytes]]:
    batch: list[bytes] = []
    async for k in keys:
        batch.append(k)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
