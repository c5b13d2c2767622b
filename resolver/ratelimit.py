"""Per-client request rates (IDIS RC 603), off unless configured.

A token bucket per client address: ``rate`` requests a second on average, bursts up to
``burst``. Buckets of idle clients are forgotten first when ``max_clients`` is reached,
so a spoofed-address flood cannot grow memory without bound.

Per worker; ``SharedRateLimiter`` holds the same limit across every worker and node
sharing a Redis (registry/shared_limits.py), with this one as its fallback.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from idnode.registry.shared_limits import BUSY, Shared, SharedBucket


class RateLimiter:
    def __init__(self, rate: float, burst: float | None = None, max_clients: int = 100_000):
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, 2 * rate)
        self.max_clients = max_clients
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self.refused = 0

    def allow(self, client: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        tokens, last = self._buckets.pop(client, (self.burst, t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        else:
            self.refused += 1
        self._buckets[client] = (tokens, t)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed


@dataclass(slots=True)
class _Lease:
    tokens: float = 0.0  # leased from the shared bucket and not spent; below 0: owed
    seen: int = 0  # requests seen here, counted up to the chunk (then Redis is asked)
    asking: bool = False
    dry_until: float = 0.0  # the shared bucket was empty: not asked again before


class SharedRateLimiter(RateLimiter):
    """The same limit, held across every worker and node sharing one Redis.

    A worker leases tokens of a client's shared bucket ``chunk`` at a time and spends
    them locally, so ``allow`` stays synchronous and Redis is asked about once per
    ``chunk`` requests of a client (ahead of need: when half the lease is spent). While
    a lease is on its way a request is admitted on credit, up to ``chunk`` requests,
    repaid from the next lease, unless the bucket was last seen empty. So across all
    workers a client gets at most ``rate`` a second plus ``burst``, plus at most
    ``chunk`` per worker (the credit, and lease tokens a worker holds when its client
    moves to another); ``chunk`` is a quarter of the burst unless given. The price: a
    burst that reaches a worker before its first lease for that client is back (one
    Redis round trip) is admitted ``chunk`` requests of it, the rest refused. When
    Redis does not answer, each worker applies the limit on its own (RateLimiter) until
    it does: logged once, counted (idnode_shared_limit_fallbacks_total).

    Redis work stays bounded under a flood of new (spoofed) addresses: a client's first
    lease is asked only once it has sent ``chunk`` requests here (its credit spent;
    before that it cost nothing but an LRU entry, as with the per-worker limit), and no
    lease is asked while the worker's shared limits have their cap of Redis calls in
    flight (shared_limits.Gate): a client out of credit is then decided on this worker's
    own bucket, counted in idnode_shared_limit_busy_total.
    """

    def __init__(
        self,
        rate: float,
        burst: float | None,
        shared: Shared,
        kind: str,
        *,
        chunk: int | None = None,
        max_clients: int = 100_000,
    ) -> None:
        super().__init__(rate, burst, max_clients)
        # A quarter of the burst by default: Redis is asked once per that many requests
        # of a client, and a worker overshoots by at most that.
        self.chunk = max(1, int(chunk if chunk is not None else self.burst // 4))
        self.bucket = SharedBucket(shared, kind, rate, self.burst)
        self._leases: OrderedDict[str, _Lease] = OrderedDict()

    def allow(self, client: str, now: float | None = None) -> bool:
        t = time.monotonic() if now is None else now
        if not self.bucket.shared.up(t):
            return super().allow(client, t)  # Redis down: this worker's own limit
        lease = self._leases.pop(client, None) or _Lease()
        self._leases[client] = lease
        if len(self._leases) > self.max_clients:
            self._leases.popitem(last=False)
        if lease.seen < self.chunk:
            lease.seen += 1
        if lease.tokens >= 1.0:
            lease.tokens -= 1.0
            allowed = True
        elif t >= lease.dry_until and lease.tokens > -self.chunk:
            lease.tokens -= 1.0  # on credit, repaid from the lease being asked for
            allowed = True
        elif not lease.asking and t >= lease.dry_until and self.bucket.shared.busy():
            # Out of credit and no lease can be asked for now: this worker's own limit.
            BUSY.labels(self.bucket.shared.name).inc()
            return super().allow(client, t)
        else:
            allowed = False
            self.refused += 1
        if (
            not lease.asking
            and lease.seen >= self.chunk  # a client new here costs Redis nothing at first
            and lease.tokens < self.chunk / 2
            and t >= lease.dry_until
        ):
            self._ask(client, lease)
        return allowed

    def _ask(self, client: str, lease: _Lease) -> None:
        # Not asked (gate full, or no loop): the lease stays as it is, asked again later.
        lease.asking = self.bucket.shared.gate.ask(lambda: self._lease(client, lease))

    async def _lease(self, client: str, lease: _Lease) -> None:
        want = max(1, int(self.chunk - lease.tokens))  # a lease and what is owed
        try:
            got = await self.bucket.take(client, want)
        finally:
            lease.asking = False
        if got is None:
            return  # Redis down: allow() uses the local limit until it answers
        lease.tokens += got
        if got < want:  # empty: nothing more before a chunk has refilled
            lease.dry_until = time.monotonic() + self.chunk / self.rate
