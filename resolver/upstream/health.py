"""Health of the servers this node sends lookups to (the sites of its delegated prefixes).

Every ``interval`` seconds (with +/-20 % jitter, so the workers of a node and the nodes of
a hierarchy do not probe in step) each watched server gets one cheap request,
GET_SITE_INFO, over UDP when it has a UDP query interface and over TCP when that gets no
answer (a server whose network drops UDP still answers TCP lookups), at most
``concurrency`` at once, each bounded by ``timeout``. Any answer counts as alive.
What is probed is bounded whatever the delegation records say: at most
``MAX_PER_DELEGATION`` servers of one delegation (recursion.delegated_servers) and
``MAX_SERVERS`` in all (logged once when more are named); the metrics carry a label only
for servers probed now. After
``failures`` probes in a row without one the server is marked down (logged once); its
first answer marks it up again (logged). A server never probed yet counts as up.

The recursion stage asks :meth:`ServerHealth.is_down` before it sends a lookup to the
server a handle hashes to: a client is told at once that the enterprise node is not
answering (or served a stale answer), never made to wait for a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .. import metrics
from ..codec import ServerInfo
from .exchange import Unanswered, ask_server, query_ports, site_info_request

log = logging.getLogger("idnode.upstream")
MAX_PER_DELEGATION = 8  # servers of one delegated prefix probed
MAX_SERVERS = 256  # servers probed in all


def server_label(server: ServerInfo) -> str:
    """``host:port`` of a server (its UDP query port, else TCP): how people and the
    metrics name it."""
    udp, tcp = query_ports(server)
    port = udp or tcp or 0
    host = server.ip
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class _State:
    server: ServerInfo
    failures: int = 0  # probes in a row without an answer
    down: bool = False
    rtt: float | None = None  # of the last answered probe, seconds


class ServerHealth:
    def __init__(
        self,
        *,
        interval: float = 5.0,
        failures: int = 2,
        timeout: float | None = None,
        concurrency: int = 8,
        max_servers: int = MAX_SERVERS,
    ) -> None:
        self.interval = interval
        self.failures = max(1, failures)
        self.timeout = timeout if timeout is not None else min(2.0, max(0.2, interval / 2))
        self.concurrency = max(1, concurrency)
        self.max_servers = max(0, max_servers)
        self._servers: dict[str, _State] = {}
        self._said_capped = False

    def __len__(self) -> int:
        return len(self._servers)

    def watch(self, servers: Iterable[ServerInfo]) -> None:
        """Probe these servers from now on (those no longer named are forgotten)."""
        wanted: dict[str, ServerInfo] = {}
        named = 0
        for s in servers:
            if query_ports(s) == (None, None):
                continue
            label = server_label(s)
            if label in wanted:
                continue
            named += 1
            if len(wanted) < self.max_servers:
                wanted[label] = s
        if named > len(wanted) and not self._said_capped:
            self._said_capped = True
            log.warning(
                "the delegations name %d upstream servers: only the first %d are probed",
                named,
                len(wanted),
            )
        for label in list(self._servers):
            if label not in wanted:
                del self._servers[label]
                with contextlib.suppress(KeyError):
                    metrics.UPSTREAM_UP.remove(label)
                with contextlib.suppress(KeyError):
                    metrics.UPSTREAM_PROBE_SECONDS.remove(label)
        for label, server in wanted.items():
            if label not in self._servers:
                self._servers[label] = _State(server)
                metrics.UPSTREAM_UP.labels(label).set(1)

    def is_down(self, server: ServerInfo) -> bool:
        state = self._servers.get(server_label(server))
        return state is not None and state.down

    def down(self) -> list[str]:
        return sorted(label for label, st in self._servers.items() if st.down)

    def record(self, label: str, rtt: float | None) -> None:
        """One probe's outcome: ``rtt`` None when the server did not answer."""
        st = self._servers.get(label)
        if st is None:
            return
        if rtt is not None:
            st.failures, st.rtt = 0, rtt
            metrics.UPSTREAM_PROBES.labels("answered").inc()
            metrics.UPSTREAM_PROBE_SECONDS.labels(label).set(rtt)
            if st.down:
                st.down = False
                metrics.UPSTREAM_UP.labels(label).set(1)
                log.info("upstream server %s answers again: marked up", label)
            return
        st.failures += 1
        metrics.UPSTREAM_PROBES.labels("unanswered").inc()
        if not st.down and st.failures >= self.failures:
            st.down = True
            metrics.UPSTREAM_UP.labels(label).set(0)
            log.warning(
                "upstream server %s did not answer %d probes in a row: marked down "
                "(recursive lookups it would get are answered at once)",
                label,
                st.failures,
            )

    async def probe(self, server: ServerInfo) -> float | None:
        """The round trip of one GET_SITE_INFO, or None when the server does not answer."""
        try:
            # Each transport gets the whole timeout: a server whose network drops UDP is
            # alive if TCP answers, and any answer counts (no "ask over TCP" second try).
            answer = await ask_server(
                server, site_info_request(), self.timeout, each=True, tcp_when_too_big=False
            )
        except Unanswered:
            return None
        return answer.rtt

    async def probe_all(self) -> None:
        """Probe every watched server once, ``concurrency`` at a time."""
        gate = asyncio.Semaphore(self.concurrency)

        async def one(label: str, server: ServerInfo) -> None:
            async with gate:
                self.record(label, await self.probe(server))

        await asyncio.gather(*(one(label, st.server) for label, st in list(self._servers.items())))

    async def run(self, targets: Callable[[], Iterable[ServerInfo]]) -> None:
        """Probe the servers ``targets()`` names (asked again each round) for ever."""
        while True:
            try:
                self.watch(targets())
                await self.probe_all()
            except Exception as exc:  # never let the prober die; say why once per round
                log.warning("cannot probe upstream servers: %s", exc)
            await asyncio.sleep(self.interval * random.uniform(0.8, 1.2))
