"""One worker of the node: open the registry and caches, serve UDP, TCP and HTTP, stop cleanly.

The node binds its Handle (UDP, TCP) and HTTP ports once, without SO_REUSEPORT, and its
workers serve those same sockets (resolver/supervisor.py hands them over): only the
workers of one node share a port, and a second node on it fails at start naming it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import signal
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from idnode.registry.auth import Identity
from idnode.registry.bootstrap import publish_site
from idnode.registry.delegations import Delegations
from idnode.registry.login_guard import LoginGuard
from idnode.registry.names import PrefixAuthority
from idnode.registry.prefix_applications import Suspensions
from idnode.registry.quotas import Quotas
from idnode.registry.sealing import Sealer, SecretError
from idnode.registry.server_key import ServerKey, ServerKeyError
from idnode.registry.service import RegistryService
from idnode.registry.sessions import SessionStore
from idnode.registry.shared_limits import Gate, ScriptClient, Shared, SharedQuota, limits_client
from idnode.registry.site_servers import SiteServers
from idnode.registry.store import Store, open_store, redact_url
from idnode.registry.value_search import marked_on, switch_on

from . import gc_pauses, loop_stalls, udp_batch_io
from .changefeed import ChangeLog, LocalChangeFeed
from .codec import (
    Interface,
    InterfaceProtocol,
    InterfaceType,
    ServerInfo,
    SessionCipher,
    SiteInfo,
)
from .connlimits import (
    ByteBudget,
    ConnectionLimits,
    LimitLog,
    connection_ceiling,
    raise_descriptor_limit,
)
from .core import FIRST_CATCH_UP_SECONDS, Resolver
from .dns_door import DnsDoor, DnsTcp, start_dns
from .handle_service import HandleService
from .handle_sessions import SessionDoor
from .health import HealthCheck
from .http_door import GuardedHttp, build_app
from .l1 import L1Cache, Lifetimes
from .l2 import RedisClusterTier, RedisTier
from .listeners import Listeners, bind_listeners
from .ratelimit import RateLimiter, SharedRateLimiter
from .ready_answers import ReadyAnswers
from .settings import SITE_HASHES, Settings, site_members
from .stages.chain import lookup_chain
from .stages.delegation import DelegationStage
from .stages.recursion import AnswerCache, Recursion, delegated_servers
from .stages.site_peers import fetch_keys, stored_keys, with_keys
from .stages.suspension import SuspensionStage, prefix_lifecycle_timer
from .tcp_door import TcpDoor
from .udp_door import UdpDoor

log = logging.getLogger("idnode.node")

PREFIX_REFRESH_SECONDS = 30.0
SESSION_REAP_SECONDS = 30.0
PARENT_CHECK_SECONDS = 1.0


def site_info(
    s: Settings, public_key: bytes = b"", peer_keys: Mapping[int, bytes] | None = None
) -> SiteInfo:
    """This node's HS_SITE: one server with Handle TCP/UDP and HTTP interfaces, and the
    public key clients check certified answers against; or, with --site-servers, every
    server of the site in the order given, with the site's hash option (each server's
    key where known: this one's, and ``peer_keys`` by server id)."""
    members = site_members(s)
    if members:
        keys = {**(peer_keys or {}), s.site_server_id: public_key}
        http = {m.server_id: m.http_port for m in members if m.http_port}
        http.setdefault(s.site_server_id, s.http_port)
        return SiteInfo(
            servers=tuple(
                ServerInfo.at(
                    m.host,
                    server_id=m.server_id,
                    public_key=keys.get(m.server_id, b""),
                    interfaces=_interfaces(m.port, http.get(m.server_id)),
                )
                for m in members
            ),
            serial=s.site_serial,
            hash_option=SITE_HASHES[s.site_hash.lower()],
            attributes=(("desc", f"idnode site of {len(members)} servers"),),
        )
    return SiteInfo(
        servers=(
            ServerInfo.at(
                s.site_address,
                server_id=1,
                public_key=public_key,
                interfaces=(
                    Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.TCP, s.handle_port),
                    Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, s.handle_port),
                    Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.HTTP, s.http_port),
                ),
            ),
        ),
        serial=s.site_serial,
        attributes=(("desc", "idnode secondary node"),),
    )


def _interfaces(handle_port: int, http_port: int | None) -> tuple[Interface, ...]:
    handle = (
        Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.TCP, handle_port),
        Interface(InterfaceType.QUERY, InterfaceProtocol.UDP, handle_port),
    )
    if not http_port:
        return handle
    return (*handle, Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.HTTP, http_port))


def site_servers(s: Settings) -> SiteServers | None:
    """Which server of this node's site holds a handle, with --site-servers; else None."""
    return SiteServers(site_info(s), s.site_server_id) if site_members(s) else None


def change_feed_path(database_url: str) -> Path:
    """One file per registry, shared by the workers of a node on this machine."""
    digest = hashlib.sha256(database_url.encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"idnode-{digest}.changes"


class Node:
    def __init__(self, settings: Settings, listeners: Listeners) -> None:
        self.settings = settings
        self.listeners = listeners
        self.stopping = asyncio.Event()
        self.store: Store | None = None
        self.l1: L1Cache | None = None
        self.ready: ReadyAnswers | None = None
        self.l2: RedisTier | None = None
        # The shared limits' own Redis client and gate (bounded calls and connections).
        self._limits: tuple[ScriptClient, Gate] | None = None
        self.core: Resolver | None = None
        self.udp: UdpDoor | None = None
        self.tcp: TcpDoor | None = None
        self.dns: tuple[DnsDoor, DnsTcp] | None = None  # the DNS gateway, with --dns-port
        self.http: web.AppRunner | None = None
        self.grpc: Any = None
        self._refresh: asyncio.Task[None] | None = None
        self._flush: asyncio.Task[None] | None = None
        self._lag: asyncio.Task[None] | None = None  # the event loop's lateness, measured
        self._tracer: loop_stalls.StallTracer | None = None  # --stall-trace-ms
        self._listen: asyncio.Task[None] | None = None
        self._reap: asyncio.Task[None] | None = None
        self._http_server: asyncio.Server | None = None
        self._parent: asyncio.Task[None] | None = None
        self._probes: asyncio.Task[None] | None = None  # health of delegated servers
        self._site_keys: asyncio.Task[None] | None = None
        self._lifecycle: asyncio.Task[None] | None = None
        self._statistics: asyncio.Task[None] | None = None  # counts flushed and reported
        self._authority: PrefixAuthority | None = None

    async def start(self) -> None:
        s = self.settings
        from . import metrics

        store = self.store = open_store(
            s.database_url,
            s.case_sensitive,
            read_urls=s.database_read_url,
            replica_max_lag=s.replica_max_lag,
            replica_observer=metrics.observe_replicas,
            pool_size=s.database_pool_size,
        )
        await store.open()
        # Writes keep the value index in step (README, Search) when asked, and also when
        # the registry says its index is kept (a build started elsewhere): a node started
        # without the flag must not write handles the index then never finds.
        if s.search_index:
            switch_on(store)
        elif await marked_on(store):
            log.warning("the registry keeps a search index: this node keeps it in step too")
            switch_on(store)
        homed = await store.homed_prefixes()
        authority = PrefixAuthority(homed, s.case_sensitive)
        if s.redis_url:
            # A cluster's tier is a RedisTier too: the stage and the listener use either.
            self.l2 = (RedisClusterTier if s.redis_cluster else RedisTier)(
                s.redis_url,
                namespace=s.redis_namespace,
                ttl=s.l2_ttl,
                negative_ttl=max(1, int(s.negative_ttl)),
                max_batch=s.batch_max,
                timeout=s.l2_timeout,
            )
            try:
                await asyncio.wait_for(self.l2.ping(), 2.0)
            except Exception as exc:
                log.warning(
                    "redis at %s does not answer (%s); L2 stays a miss until it does",
                    s.redis_url,
                    exc,
                )
        feed = None
        if not s.redis_url and s.workers > 1:
            # No Redis to carry invalidations: the workers share a change feed.
            feed = LocalChangeFeed(store, change_feed_path(s.database_url))
        l1 = self.l1 = L1Cache(s.l1_max_mb * 1024 * 1024)
        lifetimes = Lifetimes(s.l1_ttl, s.negative_ttl)
        delegations = Delegations(authority)
        chain = lookup_chain(
            store,
            authority,
            l1,
            self.l2,
            lifetimes,
            max_batch=s.batch_max,
            delegations=delegations,
            recursion=(recursion := self._recursion() if s.recursion else None),
            site=(partition := site_servers(s)),
            site_peer_timeout=s.site_peer_timeout,
            site_peer_ttl=s.site_peer_ttl,
            suspensions=Suspensions(store.case_sensitive),
        )
        delegation = next(x for x in chain if isinstance(x, DelegationStage))
        await delegation.refresh()
        suspension = next(x for x in chain if isinstance(x, SuspensionStage))
        await suspension.refresh()
        core = self.core = Resolver(
            chain,
            case_sensitive=store.case_sensitive,
            feed=feed,
            # With Redis, the registry's change feed is what a worker catches up from
            # after losing Redis or its listener (resolver/changefeed.py).
            changes=ChangeLog(store) if self.l2 is not None else None,
            write_position=store.write_position,
            heard_write=store.heard_write,
            hold_replicas=store.hold_replicas,
            # With Redis, L1 answers only while the listener hears back its beats.
            leased=self.l2 is not None,
        )
        if self.l2 is not None:
            # Listen before the doors open and let the first catch-up finish (if Redis
            # answers): a node that says it is ready serves from its caches at once.
            self._listen = asyncio.get_running_loop().create_task(
                self.l2.listen(
                    core.forget, core.listener_subscribed, core.listener_lost, core.renew
                )
            )
            await core.in_step(FIRST_CATCH_UP_SECONDS)
        registry, sessions = self._registry(store, authority, core)
        # Handles under a delegated prefix are the delegate's: no prefix admin here
        # creates them (registry/permissions.py).
        registry.permissions.delegations = delegations
        registry.writes.site = partition  # a handle of another server of the site: refused
        server_key = await self._server_key(store, registry.sealer)
        limiter = self._rate_limiter(s.rate_limit, None, "rate-limit") if s.rate_limit > 0 else None
        door = SessionDoor(
            sessions, registry, server_key, cipher=SessionCipher[s.session_cipher.upper()]
        )
        site = site_info(s, server_key.public_data if server_key is not None else b"")
        if partition is not None and homed:  # the other servers' keys, as published before
            key = store.key(f"0.NA/{homed[0]}")
            site = with_keys(site, stored_keys((await store.get_many([key])).get(key), site))
        await self._publish_site(store, homed, site, core)
        self._prefix_lifecycle(registry, suspension, site)
        self._start_statistics(store, authority)
        self.ready = ReadyAnswers(s.ready_answers_mb * 1024 * 1024)
        service = HandleService(
            core,
            site,
            registry,
            sessions,
            limiter,
            door,
            self.ready,
        )
        # A hosted approval publishes the site as it is then: with the keys of the site's
        # other servers learnt since the start (_learn_site_keys), and their serial.
        registry.applications.site = lambda: service.site
        if partition is not None:  # then asked of them until all are known
            self._site_keys = asyncio.get_running_loop().create_task(
                self._learn_site_keys(store, homed, core, service)
            )
        report = LimitLog()  # every bound's refusals, summarised
        if s.signatures_per_client > 0:  # each signature is an RSA/DSA/Ed25519 operation
            budget = self._rate_limiter(
                s.signatures_per_client, float(s.signature_burst), "signing-budget"
            )
            service.replies.limit_signing(budget, report)
        loop = asyncio.get_running_loop()
        ports = self.listeners
        udp = self.udp = UdpDoor.from_settings(service, s)
        batched, how = udp_batch_io.choose(s.udp_batch_io)
        if batched:
            udp.serve_batched(ports.handle_udp[0])
        else:
            await loop.create_datagram_endpoint(lambda: udp, sock=ports.handle_udp[0])
        if self._parent is None:  # else a supervisor's worker: it said so, once for all
            log.info("handle UDP I/O: %s", how)
        descriptors = raise_descriptor_limit()
        limits = ConnectionLimits(s.conns_per_client, connection_ceiling(descriptors), report)
        self.tcp = TcpDoor(
            service,
            idle_timeout=s.tcp_idle_timeout,
            slow_timeout=s.tcp_slow_timeout,
            limits=limits,
            buffers=ByteBudget(s.tcp_buffer_max_mb * 1024 * 1024),
        )
        self.tcp.server = await loop.create_server(self.tcp.protocol, sock=ports.handle_tcp)
        if ports.dns_tcp is not None:
            self.dns = await start_dns(core, authority, s, ports.dns_udp[0], ports.dns_tcp, limits)
        self.http = web.AppRunner(
            build_app(
                service,
                HealthCheck(store, self.l2, authority, l1),
                bodies=ByteBudget(s.http_body_max_mb * 1024 * 1024),
                body_timeout=s.http_body_timeout,
                report=limits.report,
            ),
            access_log=None,
            shutdown_timeout=s.shutdown_grace,
            # Also the deadline of a first request head: aiohttp closes a connection
            # that has sent no whole head this long after connecting (slowloris).
            keepalive_timeout=s.http_idle_timeout,
        )
        await self.http.setup()
        server = self.http.server
        assert server is not None
        self._http_server = await loop.create_server(
            lambda: GuardedHttp(server, limits, s.http_send_timeout), sock=ports.http
        )
        # imported here: it builds the code from protos/
        from .grpc_door import CallLimits, start_grpc

        self.grpc = await start_grpc(
            core,
            registry,
            s.listen,
            s.grpc_port,
            cert=s.grpc_tls_cert,
            key=s.grpc_tls_key,
            limits=CallLimits(
                s.grpc_calls_per_client, s.grpc_calls_max, s.conns_per_client, limits.report
            ),
        )
        self._refresh = loop.create_task(self._refresh_prefixes(store, authority, delegation))
        if recursion is not None and recursion.health is not None:
            health = recursion.health
            self._probes = loop.create_task(health.run(lambda: delegated_servers(delegations)))
        self._reap = loop.create_task(self._reap_sessions(sessions))
        self._flush = loop.create_task(self._flush_metrics())
        self._lag, self._tracer = loop_stalls.start_probe(s.stall_trace_ms)
        log.info(
            "serving: handle udp+tcp %s:%d, http %s:%d, grpc %d; registry %s; redis %s; homed %s",
            s.listen,
            s.handle_port,
            s.listen,
            s.http_port,
            s.grpc_port,
            redact_url(s.database_url),
            s.redis_url or "off",
            ", ".join(sorted(homed)) or "(none: run idnode init)",
        )

    def _prefix_lifecycle(
        self, registry: RegistryService, stage: SuspensionStage, site: SiteInfo
    ) -> None:
        """Applications, approvals and suspensions (registry/prefix_applications.py):
        this worker's suspended set is the stage's; approved prefixes go upward."""
        s = self.settings
        apps = registry.applications
        apps.suspensions = registry.writes.suspensions = stage.suspensions
        # the site at start, until the service's (which learns the peers' keys) replaces it
        apps.site, apps.retry_max = (lambda: site), s.upward_retry_max
        if s.upward_top:
            from .upstream.register import Upward

            apps.upward = Upward(
                s.upward_top,
                Identity.parse(s.upward_admin),
                s.upward_secret.encode() if s.upward_secret else None,
                s.upward_key_file or None,
            ).register
        self._lifecycle = asyncio.get_running_loop().create_task(
            prefix_lifecycle_timer(stage, apps)
        )

    def _start_statistics(self, store: Store, authority: PrefixAuthority) -> None:
        """Per-prefix counts flushed into the registry, and reported to --upward-top
        (registry/statistics.py, resolver/upstream/reporting.py)."""
        from idnode.registry.statistics import USAGE, homed_prefix

        from .upstream.reporting import Reporter, statistics_timer

        s = self.settings
        self._authority = authority
        USAGE.homed_of = lambda p: homed_prefix(authority, p)
        reporter = None
        if s.upward_top and s.statistics_report > 0:
            reporter = Reporter(
                store,
                s.upward_top,
                Identity.parse(s.upward_admin),
                secret=s.upward_secret.encode() if s.upward_secret else None,
                key_file=s.upward_key_file or None,
                http=s.upward_http,
                retry_max=s.upward_retry_max,
                timeout=max(2.0, min(10.0, 4 * s.statistics_report)),
            )
        self._statistics = asyncio.get_running_loop().create_task(
            statistics_timer(store, authority, reporter, s.statistics_flush, s.statistics_report)
        )

    def _registry(
        self, store: Store, authority: PrefixAuthority, core: Resolver
    ) -> tuple[RegistryService, SessionStore]:
        s = self.settings
        sealer = None
        if Path(s.secret_key_file).exists():
            sealer = Sealer.from_file(s.secret_key_file)
        else:
            log.warning(
                "no node key at %s: HS_SECKEY logins and writes are off (idnode init "
                "creates it; every node of a registry needs the same file)",
                s.secret_key_file,
            )
        admins = [Identity.parse(a) for a in s.server_admins.split(",") if a.strip()]
        registry = RegistryService(
            store,
            authority,
            sealer=sealer,
            server_admins=admins,
            on_change=core.invalidate,
            quotas=self._quotas(),
        )
        registry.credentials.guard = LoginGuard(
            registry.audit,
            failures=s.auth_failures,
            identity_failures=s.auth_identity_failures,
            interval=s.auth_retry_interval,
            shared=self._shared("auth-failures"),  # counted for every node with Redis
        )
        return registry, SessionStore(
            store,
            sealer,
            challenge_ttl=s.challenge_ttl,
            session_ttl=s.session_ttl,
            per_client=s.sessions_per_client,
            total=s.sessions_max,
            client_bytes=s.challenge_mb_per_client << 20,
            total_bytes=s.challenge_mb_max << 20,
        )

    def _shared(self, name: str) -> Shared | None:
        """Limits held in Redis for every worker and node, when the node has Redis
        (registry/shared_limits.py); None: each worker's own."""
        if self.l2 is None:
            return None
        if self._limits is None:
            s = self.settings
            client = limits_client(
                s.redis_url, cluster=s.redis_cluster, timeout=max(s.l2_timeout, 0.5)
            )
            self._limits = (client, Gate())
        client, gate = self._limits
        return Shared(client, self.settings.redis_namespace, name, gate)

    def _rate_limiter(self, rate: float, burst: float | None, name: str) -> RateLimiter:
        shared = self._shared(name)
        if shared is None:
            return RateLimiter(rate, burst)
        return SharedRateLimiter(rate, burst, shared, name)

    def _quotas(self) -> Quotas | None:
        s = self.settings
        quotas = Quotas.parse(s.quota_per_prefix, s.quota_overrides)
        shared = self._shared("quota")
        if quotas is not None and shared is not None:
            quotas.shared = SharedQuota(shared)
        return quotas

    async def _server_key(self, store: Store, sealer: Sealer | None) -> ServerKey | None:
        """The key pair certified answers are signed with (made by idnode init)."""
        try:
            row = await store.server_key()
        except Exception as exc:  # a registry from before the server key table
            log.warning("cannot read the server key (%s): run idnode init to upgrade", exc)
            return None
        if row is None or sealer is None:
            log.warning(
                "no server key%s: certified answers go out unsigned and HS_SITE publishes "
                "no public key (idnode init makes one)",
                "" if row is None else " readable without the node key",
            )
            return None
        try:
            key = ServerKey.unseal(sealer, row[1])
        except (SecretError, ServerKeyError) as exc:
            log.error("cannot open the server key: %s (is this the node key file of init?)", exc)
            return None
        log.info("server key: %s (certified answers are signed with it)", key.algorithm)
        return key

    def _recursion(self) -> Recursion:
        """How this node recurses (--recursion): from the --root-info sites, else from
        its own site (where a referral's service handle is asked first)."""
        s = self.settings
        from .upstream.health import ServerHealth
        from .upstream.root_info import load_root_info
        from .upstream.walker import Walker

        roots = load_root_info(s.root_info).sites if s.root_info else (site_info(s),)
        health = None
        if s.probe_interval > 0:
            health = ServerHealth(interval=s.probe_interval, failures=s.probe_failures)
        log.info(
            "recursion on for clients that set REC: %s; at most %d referrals; probes %s",
            f"from the root in {s.root_info}" if s.root_info else "delegated prefixes only",
            s.recursion_limit,
            f"every {s.probe_interval:g}s" if health is not None else "off",
        )
        return Recursion(
            Walker(roots, timeout=s.upstream_timeout, max_referrals=s.recursion_limit),
            from_root=bool(s.root_info),
            health=health,
            limit=s.recursion_limit,
            cache=AnswerCache(s.recursion_cache_entries, s.recursion_stale),
            max_ttl=s.recursion_max_ttl,
            negative_ttl=s.recursion_negative_ttl,
        )

    async def _reap_sessions(self, sessions: SessionStore) -> None:
        """Expired sessions and challenges leave the registry within a minute, or within
        twice the challenge lifetime when that is shorter (an operator who shortens it
        wants the unanswered ones gone sooner)."""
        every = min(SESSION_REAP_SECONDS, max(1.0, sessions.challenge_ttl))
        while True:
            await asyncio.sleep(every)
            try:
                gone = await sessions.reap()
                if gone:
                    log.debug("removed %d expired sessions and challenges", gone)
            except Exception as exc:
                log.warning("cannot remove expired sessions: %s", exc)

    async def _publish_site(
        self, store: Store, homed: list[str], site: SiteInfo, core: Resolver
    ) -> None:
        """This node's HS_SITE in ``0.NA/<prefix>`` of each homed prefix, written when it
        lacks one or it changed (the other values kept); every worker checks, the first
        writes."""
        written = []
        for prefix in homed:
            try:
                if await publish_site(store, prefix, site):
                    written.append(f"0.NA/{prefix}")
            except Exception as exc:
                log.warning("cannot publish this node's HS_SITE in 0.NA/%s: %s", prefix, exc)
        if written:
            log.info("published this node's HS_SITE in %s", ", ".join(written))
            await core.invalidate(written)

    async def _learn_site_keys(
        self, store: Store, homed: list[str], core: Resolver, service: HandleService
    ) -> None:
        """A multi-server site's HS_SITE with every server's public key: each other server
        is asked (GET_SITE_INFO) until all have answered, the site republished (and served
        to GET_SITE_INFO) each time a key is learnt."""
        s = self.settings
        wait = 1.0
        while not all(x.public_key for x in service.site.servers):
            keys = await fetch_keys(service.site, s.site_server_id, max(1.0, s.site_peer_timeout))
            site = with_keys(service.site, keys)
            if site != service.site:  # a newer record: clients that cache sites see it
                service.site = site = dataclasses.replace(site, serial=(site.serial + 1) & 0xFFFF)
                await self._publish_site(store, homed, site, core)
                continue
            await asyncio.sleep(wait)
            wait = min(wait * 2, 30.0)

    async def _refresh_prefixes(
        self, store: Store, authority: PrefixAuthority, delegation: DelegationStage
    ) -> None:
        """Pick up prefixes homed (idnode init) and delegations made while the node runs."""
        while True:
            await asyncio.sleep(PREFIX_REFRESH_SECONDS)
            try:
                authority.replace(await store.homed_prefixes())
                await delegation.reload()
            except Exception as exc:
                log.warning("cannot refresh homed and delegated prefixes: %s", exc)

    async def _flush_metrics(self) -> None:
        from . import metrics

        while True:
            await asyncio.sleep(1.0)
            metrics.TALLY.flush()
            if self.l1 is not None:
                metrics.L1_ENTRIES.set(len(self.l1))
            if self.ready is not None:
                self.ready.report()

    async def stop(self) -> None:
        grace = self.settings.shutdown_grace
        log.info("shutting down: finishing requests in flight (up to %.0fs)", grace)
        if self._site_keys is not None:
            self._site_keys.cancel()
        for task in (
            self._refresh,
            self._flush,
            self._lag,
            self._listen,
            self._reap,
            self._parent,
            self._lifecycle,
            self._statistics,
        ):
            if task is not None:
                task.cancel()
        if self._probes is not None:
            self._probes.cancel()
        if self._tracer is not None:
            self._tracer.stop()
        if self.udp is not None:
            await self.udp.drain_and_close(grace)
        if self.tcp is not None:
            await self.tcp.drain_and_close(grace)
        if self.dns is not None:
            for dns_door in self.dns:
                await dns_door.drain_and_close(grace)
        if self.grpc is not None:
            await self.grpc.stop(grace)
        if self._http_server is not None:
            self._http_server.close()  # no new connections; cleanup() drains the others
        if self.http is not None:
            await self.http.cleanup()
        if self.core is not None:
            await self.core.drain()
        if self.l2 is not None:
            await self.l2.close()
        if self._limits is not None:
            with contextlib.suppress(Exception):
                await self._limits[0].aclose()  # type: ignore[attr-defined]
        if self.store is not None and self._authority is not None:
            from idnode.registry.statistics import flush

            try:  # this worker's last counts (a kill -9 loses at most one interval's)
                await flush(self.store, self._authority)
            except Exception as exc:
                log.warning("cannot store this worker's last statistics: %s", exc)
        if self.store is not None:
            await self.store.close()
        from . import metrics

        metrics.TALLY.flush()
        log.info("stopped")

    async def _watch_parent(self, parent: int) -> None:
        """A worker whose supervisor is gone stops (PR_SET_PDEATHSIG does it at once on
        Linux; this covers the rest): a restarted node must not find it on the ports."""
        while os.getppid() == parent:
            await asyncio.sleep(PARENT_CHECK_SECONDS)
        log.warning("the supervisor (pid %d) is gone; this worker stops", parent)
        self.stopping.set()

    async def run(self, parent: int = 0, started: Callable[[], None] | None = None) -> None:
        """Serve until told to stop; ``started`` is called once the node serves."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        if parent:
            self._parent = loop.create_task(self._watch_parent(parent))
        try:
            await self.start()
            if started is not None:
                started()
            await self.stopping.wait()
        finally:
            await self.stop()


def run_worker(settings: Settings, listeners: Listeners | None = None, parent: int = 0) -> int:
    """Entry point of one worker process (or of the node when --workers 1): serve
    ``listeners`` (bound here when None); stop when the process ``parent`` is gone."""
    from .logs import setup_logging

    setup_logging(settings.log_level)
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvloop is a dependency; stay usable without it
        log.warning("uvloop is not installed; using the default event loop")
    try:
        ports = listeners if listeners is not None else bind_listeners(settings)
        # This process is the worker: its start-up objects live as long as it does.
        gc_pauses.record_pauses()
        asyncio.run(Node(settings, ports).run(parent, started=gc_pauses.freeze_start_up))
    except OSError as exc:
        log.error("cannot start: %s", exc)
        return 2
    except Exception as exc:
        from idnode.registry.store import StoreError

        if isinstance(exc, StoreError):
            log.error("%s", exc)
            return 2
        raise
    return 0
