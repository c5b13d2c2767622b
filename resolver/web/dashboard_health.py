"""The node's health as the operator dashboard shows it: each part with a state and a
reason a person can act on.

- registry and Redis: asked now, by the same check /healthz runs (this worker's
  connections; every worker has the same registry and Redis);
- read replicas, the servers of delegated (enterprise) prefixes, and the node above
  (statistics reports): from the node's metrics, which every worker's poller and probes
  set (``idnode_replica_usable``, ``idnode_upstream_server_up``, the statistics reports'
  counters), so a part watched by another worker is shown as well.

States: ``ok``; ``degraded`` (answers, but part of the node works around it); ``down``
(the node cannot answer without it); ``off`` (not configured).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..health import HealthCheck
    from .dashboard_metrics import Reading

OK, DEGRADED, DOWN, OFF = "ok", "degraded", "down", "off"


def part(kind: str, name: str, state: str, reason: str) -> dict[str, str]:
    return {"kind": kind, "name": name, "state": state, "reason": reason}


def redis_kind(check: HealthCheck) -> str:
    # By the tier's class name: a front door does not import the Redis tier (layering).
    return "cluster" if type(check.redis).__name__ == "RedisClusterTier" else "standalone"


async def node_health(check: HealthCheck, reading: Reading) -> list[dict[str, str]]:
    report = await check.check()
    parts = []
    registry = str(report.get("registry", ""))
    if registry == "ok":
        parts.append(part("registry", "registry", OK, "answers a lookup"))
    else:
        parts.append(part("registry", "registry", DOWN, registry.removeprefix("error: ")))
    if check.redis is None:
        parts.append(part("redis", "Redis", OFF, "no --redis-url: workers share the registry"))
    else:
        name = f"Redis ({redis_kind(check)})"
        redis = str(report.get("redis", ""))
        if redis == "ok":
            parts.append(part("redis", name, OK, "answers PING"))
        else:
            parts.append(part("redis", name, DEGRADED, redis.removeprefix("degraded: ")))
    for replica, got in sorted(reading.replicas.items()):
        lag = f"lag {int(got.get('lag_bytes', 0))} bytes, {got.get('lag_seconds', 0):g} s"
        if got.get("usable", 0) >= 1:
            parts.append(part("replica", replica, OK, f"used for lookups; {lag}"))
        else:
            parts.append(
                part(
                    "replica",
                    replica,
                    DEGRADED,
                    f"skipped (down, not a standby, or lagging past --replica-max-lag); {lag}",
                )
            )
    for server, got in sorted(reading.upstream.items()):
        if got.get("up", 0) >= 1:
            rtt = got.get("rtt")
            said = f"answers probes ({rtt * 1000:.1f} ms)" if rtt else "answers probes"
            parts.append(part("enterprise", server, OK, said))
        else:
            parts.append(
                part("enterprise", server, DOWN, "did not answer the last probes: marked down")
            )
    parts.append(upward(reading))
    return parts


def upward(reading: Reading, now: float | None = None) -> dict[str, str]:
    """The node above, as far as this node talks to it: the statistics reports."""
    s = reading.single
    sent = s.get("idnode_statistics_reports_sent_total", 0.0)
    failed = s.get("idnode_statistics_report_failures_total", 0.0)
    queued = int(s.get("idnode_statistics_reports_queued", 0.0))
    last = s.get("idnode_statistics_last_report_seconds", 0.0)
    name = "node above (statistics)"
    if not (sent or failed or queued):
        return part("upstream", name, OFF, "no reports sent (no --upward-top, or none due yet)")
    ago = f"{int((time.time() if now is None else now) - last)} s ago" if last else "never"
    said = f"last report acknowledged {ago}; {queued} rows queued; {int(failed)} failed tries"
    if queued and failed and (not last or failed > sent):
        return part("upstream", name, DEGRADED, said)
    return part("upstream", name, OK, said)


def summary(parts: list[dict[str, str]]) -> str:
    states = {p["state"] for p in parts}
    return (
        DOWN
        if DOWN in states and any(p["state"] == DOWN and p["kind"] == "registry" for p in parts)
        else (DEGRADED if states & {DOWN, DEGRADED} else OK)
    )


def as_json(parts: list[dict[str, str]]) -> dict[str, Any]:
    return {"status": summary(parts), "parts": parts}
