"""Limits that hold across every worker and node sharing one Redis.

Rate limits and per-prefix quotas are counted in Redis when the node has one, so a
client or an enterprise cannot multiply its allowance by the number of workers and
nodes. Each operation is one Lua script on one key (no multi-key commands): it runs the
same on a single Redis and on a Redis Cluster. The Redis client is given (anything with
redis-py's ``eval``); the node's is made by :func:`limits_client`.

* ``SharedBucket``: a token bucket in Redis (``rate`` a second, up to ``burst``) that
  workers lease tokens from in chunks, so the request path asks Redis about once every
  ``chunk`` requests of a client, not on every one (``resolver/ratelimit.py``).
* ``SharedQuota``: the registrations of a prefix, reserved atomically before a write and
  settled after it (``registry/quotas.py``).
* ``SharedFailures``: failed authentications per client and identity, drained by every
  worker's failures (``registry/login_guard.py``).

When Redis does not answer, each falls back to the worker's own limit: logged once when
it goes and once when it is back, and counted in
``idnode_shared_limit_fallbacks_total``; Redis is asked again after ``RETRY_SECONDS``.

Redis work is bounded whatever the traffic (a flood of spoofed source addresses, say):
the limits of a worker share a :class:`Gate` of ``CALLS_IN_FLIGHT`` calls at once and a
client of their own with that many connections (:func:`limits_client`), apart from the
cache's. What is asked off the request path (leases, readings) is not asked while the
gate is full: the request is decided on the worker's own count instead, counted in
``idnode_shared_limit_busy_total``. And a client costs Redis nothing until it has used a
chunk of its allowance on this worker (a spoofed address sends a packet or two).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Protocol

import redis.asyncio as aioredis
from prometheus_client import Counter
from redis.asyncio.cluster import RedisCluster

log = logging.getLogger("idnode.limits")

RETRY_SECONDS = 5.0
CALLS_IN_FLIGHT = 8  # Redis calls of a worker's shared limits at once (and connections)

BUSY = Counter(
    "idnode_shared_limit_busy_total",
    "Requests decided on this worker's own count because the shared limits already had "
    "as many Redis calls in flight as they may (a flood of new clients, or Redis slow)",
    ["limit"],
)

FALLBACKS = Counter(
    "idnode_shared_limit_fallbacks_total",
    "Times a limit shared in Redis fell back to this worker's own count (Redis down)",
    ["limit"],
)


class ScriptClient(Protocol):
    """What the shared limits need of a Redis client: redis-py's ``eval`` (one key)."""

    def eval(self, script: str, numkeys: int, *keys_and_args: Any) -> Awaitable[Any] | Any: ...


def limits_client(url: str, *, cluster: bool, timeout: float) -> ScriptClient:
    """The shared limits' own Redis client: CALLS_IN_FLIGHT connections at most (per
    master on a cluster), so a flood of limit checks can neither open connections
    without end nor take the cache's."""
    if cluster:
        return RedisCluster.from_url(
            url,
            max_connections=CALLS_IN_FLIGHT,
            socket_timeout=timeout,
            socket_connect_timeout=2.0,
        )
    return aioredis.Redis.from_url(  # type: ignore[no-any-return]
        url, max_connections=CALLS_IN_FLIGHT, socket_timeout=timeout, socket_connect_timeout=2.0
    )


class Gate:
    """The Redis calls of a worker's shared limits: at most ``cap`` at once (callers on
    the request path wait for a slot), and at most ``cap`` asked off the request path
    and not yet answered (more are not asked: the caller decides on its own count)."""

    def __init__(self, cap: int = CALLS_IN_FLIGHT) -> None:
        self.cap = cap
        self._slots = asyncio.Semaphore(cap)
        self._asking: set[asyncio.Task[None]] = set()

    @property
    def full(self) -> bool:
        return len(self._asking) >= self.cap

    def ask(self, work: Callable[[], Coroutine[Any, Any, None]]) -> bool:
        """Run ``work`` off the request path; False (nothing started) when full or when
        there is no running loop."""
        if self.full:
            return False
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False  # a synchronous caller: nothing is asked
        task = loop.create_task(work())
        self._asking.add(task)
        task.add_done_callback(self._asking.discard)
        return True


class Shared:
    """A Redis client under a key namespace, with the up/down state every shared limit
    needs: a failure marks it down for RETRY_SECONDS (the callers use their local
    limits meanwhile), logged once per outage. Calls go through ``gate`` (shared by the
    worker's limits; one of its own unless given)."""

    def __init__(
        self, client: ScriptClient, namespace: str, name: str, gate: Gate | None = None
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.gate = gate if gate is not None else Gate()
        self.down_until = 0.0
        self._was_down = False

    def up(self, now: float | None = None) -> bool:
        return (time.monotonic() if now is None else now) >= self.down_until

    def busy(self) -> bool:
        """As many calls asked off the request path as allowed: ask nothing more."""
        return self.gate.full

    def key(self, kind: str, ident: str) -> str:
        return f"{self.namespace}:lim:{kind}:{{{ident}}}"

    async def run(self, script: str, key: str, *args: object) -> Any:
        """The script's answer; None (and down for a while) when Redis fails."""
        try:
            async with self.gate._slots:  # as many calls as the client has connections
                result = self.client.eval(script, 1, key, *args)
                if isinstance(result, Awaitable):
                    result = await result
        except Exception as exc:  # any Redis or socket error: fall back, never fail
            self.down_until = time.monotonic() + RETRY_SECONDS
            FALLBACKS.labels(self.name).inc()
            if not self._was_down:
                self._was_down = True
                log.warning(
                    "%s: redis does not answer (%s); each worker applies its own limit "
                    "until it does (asked again every %.0f s)",
                    self.name,
                    exc,
                    RETRY_SECONDS,
                )
            return None
        if self._was_down:
            self._was_down = False
            log.info("%s: redis answers again; the limit is shared again", self.name)
        return result


# --- token buckets ----------------------------------------------------------------------

# KEYS[1]: the bucket (hash: tokens, ts). ARGV: rate, burst, want. Returns the tokens
# granted (0..want, never more than the bucket holds). Time is Redis' own clock, so
# nodes with skewed clocks share one bucket correctly.
TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1]) or burst
local ts = tonumber(s[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
local granted = math.max(0, math.min(want, math.floor(tokens)))
tokens = tokens - granted
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return granted
"""


class SharedBucket:
    """Per-key token buckets in Redis, leased to this worker ``chunk`` tokens at a time."""

    def __init__(self, shared: Shared, kind: str, rate: float, burst: float) -> None:
        self.shared = shared
        self.kind = kind
        self.rate = rate
        self.burst = burst

    async def take(self, ident: str, want: int) -> int | None:
        """Up to ``want`` tokens of ``ident``'s bucket; None when Redis did not answer."""
        got = await self.shared.run(
            TAKE, self.shared.key(self.kind, ident), self.rate, self.burst, want
        )
        return None if got is None else int(got)


# --- quotas -------------------------------------------------------------------------------

# KEYS[1]: the prefix's count (hash: used, inflight, settled, at). ARGV: n, limit, now.
# -1: not seeded yet (the caller seeds it from the registry and asks again); else how
# many of n are reserved (fewer when the quota has less room).
RESERVE = """
local used = tonumber(redis.call('HGET', KEYS[1], 'used'))
if used == nil then return -1 end
local n = tonumber(ARGV[1])
local room = tonumber(ARGV[2]) - used
local got = math.max(0, math.min(n, room))
if got > 0 then
  redis.call('HINCRBY', KEYS[1], 'used', got)
  redis.call('HINCRBY', KEYS[1], 'inflight', got)
  redis.call('HSET', KEYS[1], 'at', ARGV[3])
end
redis.call('EXPIRE', KEYS[1], 86400)
return got
"""

# ARGV: the registry's count. Made once; an existing count is kept (another worker's).
SEED = """
if redis.call('HSETNX', KEYS[1], 'used', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'inflight', 0, 'settled', 0, 'at', 0)
end
redis.call('EXPIRE', KEYS[1], 86400)
return 1
"""

# ARGV: reserved, committed. The reservation ends: what was not registered is given back.
SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local reserved = tonumber(ARGV[1])
local committed = tonumber(ARGV[2])
redis.call('HINCRBY', KEYS[1], 'inflight', -reserved)
redis.call('HINCRBY', KEYS[1], 'used', committed - reserved)
redis.call('HINCRBY', KEYS[1], 'settled', committed)
return 1
"""

# ARGV: the registry's count, `settled` as read before counting, now, stale seconds.
# Applied only at a quiet moment, when it is exact: no registration settled while the
# registry counted, and none in flight (a write between its commit and its settle would
# be in the count and in flight at once). Under steady writes it waits for the next
# quiet moment: the count in Redis is exact meanwhile, only deletions are not yet given
# back. Reservations of a worker that died mid-write are dropped once the prefix has
# had no reservation for `stale` seconds. 1: applied, 0: not now.
RECONCILE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local s = redis.call('HMGET', KEYS[1], 'inflight', 'settled', 'at')
if (tonumber(s[2]) or 0) ~= tonumber(ARGV[2]) then return 0 end
local inflight = tonumber(s[1]) or 0
if inflight ~= 0 and tonumber(ARGV[3]) - (tonumber(s[3]) or 0) <= tonumber(ARGV[4]) then
  return 0
end
redis.call('HSET', KEYS[1], 'used', ARGV[1], 'inflight', 0)
return 1
"""

SETTLED = "return tonumber(redis.call('HGET', KEYS[1], 'settled')) or 0"
USED = "return tonumber(redis.call('HGET', KEYS[1], 'used')) or -1"

STALE_RESERVATION_SECONDS = 120  # far longer than any write's transaction


class SharedQuota:
    """Registrations per prefix counted in Redis: reserve before a write, settle after."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    def _key(self, prefix: str) -> str:
        return self.shared.key("quota", prefix.upper())

    async def reserve(self, prefix: str, n: int, limit: int) -> int | None:
        """How many of ``n`` registrations are reserved (-1: not seeded; None: Redis
        did not answer)."""
        got = await self.shared.run(RESERVE, self._key(prefix), n, limit, int(time.time()))
        return None if got is None else int(got)

    async def seed(self, prefix: str, count: int) -> bool:
        return await self.shared.run(SEED, self._key(prefix), count) is not None

    async def settle(self, prefix: str, reserved: int, committed: int) -> bool:
        done = await self.shared.run(SETTLE, self._key(prefix), reserved, committed)
        return done is not None

    async def settled(self, prefix: str) -> int | None:
        got = await self.shared.run(SETTLED, self._key(prefix))
        return None if got is None else int(got)

    async def used(self, prefix: str) -> int | None:
        """Registrations counted under ``prefix`` (reservations in flight included);
        None when not seeded yet or Redis did not answer."""
        got = await self.shared.run(USED, self._key(prefix))
        return None if got is None or int(got) < 0 else int(got)

    async def reconcile(self, prefix: str, count: int, settled_before: int) -> bool:
        done = await self.shared.run(
            RECONCILE,
            self._key(prefix),
            count,
            settled_before,
            int(time.time()),
            STALE_RESERVATION_SECONDS,
        )
        return done is not None


# --- failed authentications ---------------------------------------------------------------

# KEYS[1]: the tries left to a client or identity (hash: tokens, ts), refilled at ``rate``
# a second up to ``burst``. Only failures take from it (a success costs nothing shared).
# FAIL takes one, down to -burst: tries admitted on a stale view are a debt the bucket
# pays back before it admits again, so over time the rate is the shared one. Both return
# the tries left as a string (Redis would truncate a Lua number to an integer).
FAIL = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1]) or burst
local ts = tonumber(s[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
tokens = math.max(-burst, tokens - 1)
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * burst / rate * 1000) + 1000)
return tostring(tokens)
"""

PEEK = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local s = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(s[1])
if tokens == nil then return tostring(burst) end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ts = tonumber(s[2]) or now
if now > ts then tokens = math.min(burst, tokens + (now - ts) * rate) end
return tostring(tokens)
"""


class SharedFailures:
    """Failed authentications per client address or identity, counted in Redis for
    every worker and node: ``fail`` counts one, ``left`` reads the tries left."""

    def __init__(self, shared: Shared, kind: str, rate: float, burst: float) -> None:
        self.shared = shared
        self.kind = kind
        self.rate = rate
        self.burst = burst

    async def fail(self, ident: str) -> float | None:
        """Count a failure of ``ident``: the tries it has left (below 0: a debt); None
        when Redis did not answer."""
        got = await self.shared.run(FAIL, self.shared.key(self.kind, ident), self.rate, self.burst)
        return None if got is None else float(got)

    async def left(self, ident: str) -> float | None:
        """The tries ``ident`` has left; None when Redis did not answer."""
        got = await self.shared.run(PEEK, self.shared.key(self.kind, ident), self.rate, self.burst)
        return None if got is None else float(got)
