"""Prometheus metrics, in one home.

The hot path counts in plain ints (``Tally``) and flushes them into the
prometheus-client objects once a second and on every scrape: each client call
takes a lock, and at 100k answers/s those calls cost a third of the path. The
latency histogram is sampled (1 in ``LATENCY_SAMPLE``) on the L1-hit path, and
fully on every slower path.

With several workers, PROMETHEUS_MULTIPROC_DIR is set (the supervisor does it)
and any worker's /metrics shows the sum over all workers.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from . import gc_pauses
from .codec.codes import OpCode, ResponseCode

if TYPE_CHECKING:
    from prometheus_client import Metric

    from idnode.registry.replicas import ReplicaStatus

LATENCY_SAMPLE = 8

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
    f"Time from a request's arrival to its answer, by front door (L1 hits sampled 1 in "
    f"{LATENCY_SAMPLE})",
    ["door"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
MALFORMED = Counter("idnode_malformed_total", "Messages that did not decode", ["door"])
L1_ENTRIES = Gauge(
    "idnode_l1_entries", "Entries in this worker's L1 cache", multiprocess_mode="livesum"
)
# Ready answers (ready_answers.py), set once a second by the node.
READY_ANSWERS = Gauge(
    "idnode_ready_answers",
    "Handle answers to L1-hit resolutions kept ready to send again",
    multiprocess_mode="livesum",
)
READY_ANSWERS_BYTES = Gauge(
    "idnode_ready_answers_bytes",
    "Bytes the ready answers are counted at (bounded by ready_answers_mb)",
    multiprocess_mode="livesum",
)
READY_ANSWERS_SENT = Counter(
    "idnode_ready_answers_sent_total",
    "Resolutions answered from a ready answer (also counted as L1 hits)",
)
LEASE_LAPSED = Counter(
    "idnode_l1_lease_lapsed_total",
    "Lookups that passed L1 by because this worker's invalidation listener had not heard"
    " back its beat within its lease (it may be behind on invalidations)",
)
READY_ANSWERS_EVICTED = Counter(
    "idnode_ready_answers_evicted_total",
    "Ready answers pushed out, oldest first, to keep within ready_answers_mb",
)
# The UDP door's bounded state (set once a second by the door).
UDP_PENDING = Gauge(
    "idnode_udp_reassembly_pending",
    "Unfinished multi-datagram UDP requests held",
    multiprocess_mode="livesum",
)
UDP_PENDING_BYTES = Gauge(
    "idnode_udp_reassembly_bytes",
    "Bytes of unfinished multi-datagram UDP requests held",
    multiprocess_mode="livesum",
)
UDP_PENDING_CLIENTS = Gauge(
    "idnode_udp_reassembly_clients",
    "Client addresses with unfinished multi-datagram UDP requests",
    multiprocess_mode="livesum",
)
UDP_REASSEMBLY_DROPPED = Counter(
    "idnode_udp_reassembly_dropped_total",
    "Unfinished multi-datagram UDP requests given up (timeout or bounds)",
)
UDP_RRL_NETWORKS = Gauge(
    "idnode_udp_rrl_networks",
    "Source networks the UDP response-rate limit tracks",
    multiprocess_mode="livesum",
)
UDP_RRL = Counter(
    "idnode_udp_rrl_total",
    "UDP answers over the per-network rate: dropped, or slipped (a small ask-over-TCP)",
    ["action"],
)
# The UDP door's batched I/O (udp_batch_io.py), set once a second by the door.
UDP_SEND_BACKLOG = Gauge(
    "idnode_udp_send_backlog_bytes",
    "UDP answers waiting for the socket's send buffer (batched I/O), counted at their bytes "
    "plus a fixed cost each; bounded per worker",
    multiprocess_mode="livesum",
)
UDP_BATCH_DROPPED = Counter(
    "idnode_udp_batch_dropped_total",
    "UDP datagrams dropped by the batched I/O: answers' datagrams the send backlog had no "
    "room for (backlog_full; a batch's answers are queued or dropped whole) or still in it "
    "at the end of the shutdown grace (closed), datagrams the kernel refused (send_error) "
    "or that were no (data, address) pair (bad_item, a bug), requests longer than the read "
    "buffer (truncated) or from an address neither IPv4 nor IPv6 (bad_address)",
    ["reason"],
)
DNS_ANSWERS = Counter(
    "idnode_dns_answers_total",
    "DNS gateway answers by transport and rcode (SILENCE: an unreadable packet, unanswered)",
    ["transport", "rcode"],
)
UDP_TOO_LARGE = Counter(
    "idnode_udp_too_large_total",
    "UDP answers over the datagram cap, replaced by an ask-over-TCP error",
)

# Recursion and the health of the servers this node delegates to (issue 13).
UPSTREAM_UP = Gauge(
    "idnode_upstream_server_up",
    "Whether a server of a delegated prefix's sites answers this node's probes (1) or "
    "not (0), by server host:port (the lowest over workers)",
    ["server"],
    multiprocess_mode="livemin",
)
UPSTREAM_PROBE_SECONDS = Gauge(
    "idnode_upstream_probe_seconds",
    "Round trip of the last answered probe of a delegated prefix's server, by server",
    ["server"],
    multiprocess_mode="livemax",
)
UPSTREAM_PROBES = Counter(
    "idnode_upstream_probes_total", "Probes of delegated servers, by result", ["result"]
)
RECURSION_CACHE = Counter(
    "idnode_recursion_cache_total",
    "Recursive lookups by what the recursion cache held: hit, stale (served past its "
    "TTL while the upstream server does not answer) or miss",
    ["result"],
)
UPSTREAM_LOOKUPS = Counter(
    "idnode_upstream_lookups_total",
    "Lookups this node made upstream for a client (recursion), by outcome: answered, "
    "not_found, refused (another response code), recursion (RC 6: loop or bound), "
    "unanswered (no server answered) or down (not asked: the server is marked down)",
    ["outcome"],
)
# Statistics reported upward (resolver/upstream/reporting.py).
STATISTICS_QUEUED = Gauge(
    "idnode_statistics_reports_queued",
    "Per-prefix, per-day statistics rows with counts the node above has not acknowledged",
    multiprocess_mode="livemax",
)
STATISTICS_SENT = Counter(
    "idnode_statistics_reports_sent_total",
    "Statistics reports (one prefix and day each) the node above acknowledged",
)
STATISTICS_FAILED = Counter(
    "idnode_statistics_report_failures_total",
    "Attempts to send statistics reports upward that failed (retried with backoff)",
)
STATISTICS_LAST = Gauge(
    "idnode_statistics_last_report_seconds",
    "Unix time of the last statistics report the node above acknowledged",
    multiprocess_mode="max",
)

# PostgreSQL read replicas (registry/replicas.py), set after each poll of them.
REPLICA_USABLE = Gauge(
    "idnode_replica_usable",
    "Whether batched lookups may use a read replica (1) or skip it (0: down, not a standby, "
    "or lagging past replica_max_lag), by replica (the lowest over workers)",
    ["replica"],
    multiprocess_mode="livemin",
)
REPLICA_LAG_BYTES = Gauge(
    "idnode_replica_lag_bytes",
    "WAL bytes the primary has that a read replica has not replayed, at the last poll",
    ["replica"],
    multiprocess_mode="livemax",
)
REPLICA_LAG_SECONDS = Gauge(
    "idnode_replica_lag_seconds",
    "How long the primary has had WAL a read replica has not replayed (0: none), s; "
    "seen up to about replica_max_lag, past which the replica is skipped anyway",
    ["replica"],
    multiprocess_mode="livemax",
)
REGISTRY_READS = Counter(
    "idnode_registry_reads_total",
    "Keys read by batched lookups with read replicas, by where: a replica or the primary",
    ["target"],
)


def observe_replicas(status: list[ReplicaStatus], reads: dict[str, int]) -> None:
    """The replica set's observer (registry/replicas.py): gauges and read counts."""
    for r in status:
        REPLICA_USABLE.labels(r.name).set(1 if r.usable else 0)
        REPLICA_LAG_BYTES.labels(r.name).set(r.lag_bytes)
        REPLICA_LAG_SECONDS.labels(r.name).set(round(r.lag_seconds, 3))
    for target, n in reads.items():
        REGISTRY_READS.labels(target).inc(n)


_KNOWN_OPS = frozenset(int(c) for c in OpCode)
_KNOWN_RCS = frozenset(int(c) for c in ResponseCode) | {-1}
TIERS = (
    ("l1", "hit"),
    ("l1", "miss"),
    ("l2", "hit"),
    ("l2", "miss"),
    ("l3", "hit"),
    ("l3", "miss"),
    ("l2", "skipped"),  # not asked: Redis was answering almost nothing (RedisCacheStage)
)


class Tally:
    """Lock-free counts for the hot path, flushed into prometheus-client."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int, int], int] = {}
        self.cache = [0] * len(TIERS)  # indexed like TIERS

    def request(self, door: str, op: int, rc: int) -> None:
        key = (door, op, rc)
        self.requests[key] = self.requests.get(key, 0) + 1

    def flush(self) -> None:
        requests, self.requests = self.requests, {}
        for (door, op, rc), n in requests.items():
            # Labels come from the wire: anything unknown is "other", or junk
            # would create a time series per random number.
            REQUESTS.labels(
                door,
                str(op) if op in _KNOWN_OPS else "other",
                str(rc) if rc in _KNOWN_RCS else "other",
            ).inc(n)
        cache, self.cache = self.cache, [0] * len(TIERS)
        for (tier, result), n in zip(TIERS, cache, strict=True):
            if n:
                CACHE.labels(tier, result).inc(n)
        gc_pauses.TALLY.flush()


TALLY = Tally()
L1_HIT, L1_MISS, L2_HIT, L2_MISS, L3_HIT, L3_MISS, L2_SKIPPED = range(7)


def _node_registry() -> CollectorRegistry:
    """What /metrics shows: with several workers, every worker's files summed."""
    TALLY.flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def render() -> bytes:
    return generate_latest(_node_registry())


def families() -> list[Metric]:
    """The node's metrics as /metrics serves them, as objects (the operator dashboard
    reads them, so its numbers are the whole node's, never one worker's)."""
    return list(_node_registry().collect())
