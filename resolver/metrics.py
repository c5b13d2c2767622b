"""Prometheus metrics, in one home.

With several workers, set PROMETHEUS_MULTIPROC_DIR (the server does so itself) and
every worker's /metrics shows the sum over all workers.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from .codec.codes import OpCode, ResponseCode

REQUESTS = Counter(
    "idnode_requests_total",
    "Requests answered, by front door, opCode and response code",
    ["door", "op", "rc"],
)
CACHE = Counter(
    "idnode_cache_lookups_total", "Lookups by cache tier and result", ["tier", "result"]
)
LATENCY = Histogram(
    "idnode_request_seconds",
    "Time from a request's arrival to its answer, by front door",
    ["door"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
MALFORMED = Counter("idnode_malformed_total", "Messages that did not decode", ["door"])
L1_ENTRIES = Gauge(
    "idnode_l1_entries", "Entries in this worker's L1 cache", multiprocess_mode="livesum"
)

# Label children resolved once: .labels() costs about a microsecond per call.
_children: dict[tuple[str, ...], Counter] = {}


_KNOWN_OPS = frozenset(int(c) for c in OpCode)
_KNOWN_RCS = frozenset(int(c) for c in ResponseCode) | {-1}


def count_request(door: str, op: int, rc: int) -> None:
    # Labels come from the wire: anything unknown is "other", or junk would
    # create a time series per random number.
    key = (
        door,
        str(op) if op in _KNOWN_OPS else "other",
        str(rc) if rc in _KNOWN_RCS else "other",
    )
    c = _children.get(key)
    if c is None:
        c = _children[key] = REQUESTS.labels(*key)
    c.inc()


HIT_L1 = CACHE.labels("l1", "hit")
MISS_L1 = CACHE.labels("l1", "miss")
HIT_L2 = CACHE.labels("l2", "hit")
MISS_L2 = CACHE.labels("l2", "miss")
HIT_L3 = CACHE.labels("l3", "hit")
MISS_L3 = CACHE.labels("l3", "miss")


def render() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest()
