"""The operator dashboard's numbers out of the node's Prometheus metrics.

The source is ``metrics.families()``: what ``/metrics`` serves, summed over every worker
(the supervisor's multiprocess directory), so a dashboard answered by any worker shows
the whole node. Counters only grow; rates are the difference between two readings. Each
worker keeps its own readings of the last ``WINDOW`` seconds (taken when the dashboard is
asked for, never on a timer: a node nobody watches pays nothing), and a rate is over the
span from the oldest of them to now, so it reads as "per second over the last half
minute" whichever worker answers.

Latency percentiles come from the histogram the Handle doors already keep
(``idnode_request_seconds``: every slower answer, L1 hits sampled 1 in 8), read between
bucket bounds by linear interpolation, as Prometheus's histogram_quantile does.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import metrics
from ..codec.codes import OpCode, ResponseCode

if TYPE_CHECKING:
    from prometheus_client import Metric

WINDOW = 30.0  # seconds a rate is measured over (at most)
MIN_SPAN = 0.5  # a reading younger than this is too close to now for a rate
QUANTILES = (0.5, 0.9, 0.99)
TIER_NAMES = {"l1": "L1", "l2": "L2 (Redis)", "l3": "L3 (registry)"}


@dataclass
class Reading:
    """One reading of the node's metrics."""

    at: float  # time.monotonic()
    requests: dict[tuple[str, str, str], float] = field(default_factory=dict)  # door, op, rc
    cache: dict[tuple[str, str], float] = field(default_factory=dict)  # tier, result
    buckets: dict[str, dict[float, float]] = field(default_factory=dict)  # door: {le: count}
    replicas: dict[str, dict[str, float]] = field(default_factory=dict)
    upstream: dict[str, dict[str, float]] = field(default_factory=dict)
    single: dict[str, float] = field(default_factory=dict)  # unlabelled samples by name


def read(families: list[Metric] | None = None, at: float | None = None) -> Reading:
    r = Reading(time.monotonic() if at is None else at)
    for family in metrics.families() if families is None else families:
        for s in family.samples:
            name, labels, value = s.name, s.labels, float(s.value)
            if name == "idnode_requests_total":
                key = (labels["door"], labels["op"], labels["rc"])
                r.requests[key] = r.requests.get(key, 0.0) + value
            elif name == "idnode_cache_lookups_total":
                r.cache[(labels["tier"], labels["result"])] = value
            elif name == "idnode_request_seconds_bucket":
                le = math.inf if labels["le"] == "+Inf" else float(labels["le"])
                r.buckets.setdefault(labels["door"], {})[le] = value
            elif name.startswith("idnode_replica_"):
                what = name.removeprefix("idnode_replica_")
                r.replicas.setdefault(labels["replica"], {})[what] = value
            elif name in ("idnode_upstream_server_up", "idnode_upstream_probe_seconds"):
                what = "up" if name.endswith("_up") else "rtt"
                r.upstream.setdefault(labels["server"], {})[what] = value
            elif not labels and name.startswith("idnode_"):
                r.single[name] = value
    return r


class Readings:
    """This worker's readings of the last ``WINDOW`` seconds: the base of every rate."""

    def __init__(self, window: float = WINDOW) -> None:
        self.window = window
        self.kept: deque[Reading] = deque()

    def take(self, now: Reading | None = None) -> tuple[Reading, Reading | None]:
        """A new reading and the one to measure rates from (None: no earlier one)."""
        now = read() if now is None else now
        while self.kept and now.at - self.kept[0].at > self.window:
            self.kept.popleft()
        base = self.kept[0] if self.kept and now.at - self.kept[0].at >= MIN_SPAN else None
        # Keep at most one reading a second: a page refreshed by many tabs stays small.
        if not self.kept or now.at - self.kept[-1].at >= 1.0:
            self.kept.append(now)
        return now, base


def quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of a cumulative histogram (bound: count), interpolated within the
    bucket it falls in; None without observations. Past the last finite bound the answer
    is that bound (the histogram cannot say more)."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, buckets[bounds[-1]] if bounds else 0.0)
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            inside = count - below
            return lower + (le - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = le, count
    return lower


def _delta(now: dict[Any, float], base: dict[Any, float] | None) -> dict[Any, float]:
    if base is None:
        return {}
    # A counter lower than before: a worker restarted with a fresh count; its part of
    # the span is unknown, so the rate counts from zero rather than going negative.
    return {k: max(0.0, v - base.get(k, 0.0)) for k, v in now.items()}


def _rc_name(rc: str) -> str:
    if rc == "-1":
        return "unanswered"
    try:
        return ResponseCode(int(rc)).name
    except ValueError:
        return rc


def traffic(now: Reading, base: Reading | None) -> dict[str, Any]:
    """Requests by door and response code, cache ratios per tier, latency percentiles."""
    span = now.at - base.at if base is not None else 0.0
    moved = _delta(now.requests, base.requests if base else None)

    def rate(n: float) -> float | None:
        return round(n / span, 2) if span > 0 else None

    by_door_rc: dict[tuple[str, str], list[float]] = {}
    resolutions = resolved_recently = 0.0
    for (door, op, rc), n in now.requests.items():
        row = by_door_rc.setdefault((door, rc), [0.0, 0.0])
        row[0] += n
        row[1] += moved.get((door, op, rc), 0.0)
        if op == str(int(OpCode.RESOLUTION)):
            resolutions += n
            resolved_recently += moved.get((door, op, rc), 0.0)
    requests = [
        {
            "door": door,
            "rc": int(rc) if rc.lstrip("-").isdigit() else rc,
            "rcName": _rc_name(rc),
            "total": int(total),
            "perSecond": rate(recent),
        }
        for (door, rc), (total, recent) in sorted(by_door_rc.items())
    ]
    doors: dict[str, list[float]] = {}
    for (door, _rc), (total, recent) in by_door_rc.items():
        d = doors.setdefault(door, [0.0, 0.0])
        d[0] += total
        d[1] += recent / span if span > 0 else 0.0
    cache_moved = _delta(now.cache, base.cache if base else None)
    tiers = []
    for tier, label in TIER_NAMES.items():
        hit, miss = now.cache.get((tier, "hit"), 0.0), now.cache.get((tier, "miss"), 0.0)
        rhit, rmiss = cache_moved.get((tier, "hit"), 0.0), cache_moved.get((tier, "miss"), 0.0)
        tiers.append(
            {
                "tier": tier,
                "name": label,
                "hits": int(hit),
                "misses": int(miss),
                "hitRatio": round(hit / (hit + miss), 4) if hit + miss else None,
                "recentHitRatio": round(rhit / (rhit + rmiss), 4) if rhit + rmiss else None,
            }
        )
    latency = []
    for door, buckets in sorted(now.buckets.items()):
        lately = _delta(buckets, base.buckets.get(door) if base is not None else None)
        use_recent = lately.get(math.inf, 0.0) > 0
        source = lately if use_recent else buckets
        qs = [quantile(q, source) for q in QUANTILES]
        latency.append(
            {
                "door": door,
                "count": int(buckets.get(math.inf, 0.0)),
                "recent": use_recent,  # over the rate window (else since the start)
                **{
                    f"p{round(q * 100)}Ms": None if v is None else round(v * 1000, 3)
                    for q, v in zip(QUANTILES, qs, strict=True)
                },
            }
        )
    return {
        "windowSeconds": round(span, 1) if base is not None else None,
        "resolutions": {"total": int(resolutions), "perSecond": rate(resolved_recently)},
        "doors": [
            {"door": d, "total": int(t), "perSecond": round(r, 2) if span > 0 else None}
            for d, (t, r) in sorted(doors.items())
        ],
        "requests": requests,
        "cache": tiers,
        "latency": latency,
    }
