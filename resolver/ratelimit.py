"""Per-client request rates (IDIS RC 603), off unless configured.

A token bucket per client address: ``rate`` requests a second on average, bursts up to
``burst``. Buckets of idle clients are forgotten first when ``max_clients`` is reached,
so a spoofed-address flood cannot grow memory without bound.
"""

from __future__ import annotations

import time
from collections import OrderedDict


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
