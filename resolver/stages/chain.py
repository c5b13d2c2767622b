"""The order a lookup walks the resolver core's stages: the one place it is set
(resolver/stages/stage.py describes what a stage is). Built by the node for each worker,
and by tests and benchmarks that need the node's own chain."""

from __future__ import annotations

from idnode.registry.delegations import Delegations
from idnode.registry.names import PrefixAuthority
from idnode.registry.prefix_applications import Suspensions
from idnode.registry.site_servers import SiteServers
from idnode.registry.store import Store

from ..l1 import L1Cache, Lifetimes
from ..l2 import RedisTier
from .authority import AuthorityStage
from .delegation import DelegationStage
from .l1_cache import L1CacheStage
from .recursion import Recursion, RecursionStage
from .redis_cache import RedisCacheStage
from .registry_lookup import RegistryStage
from .site_peers import SitePeersStage
from .stage import Stage
from .suspension import SuspensionStage


def lookup_chain(
    store: Store,
    authority: PrefixAuthority,
    l1: L1Cache,
    redis: RedisTier | None,
    lifetimes: Lifetimes,
    *,
    max_batch: int = 256,
    delegations: Delegations | None = None,
    site: SiteServers | None = None,
    site_peer_timeout: float = 1.0,
    site_peer_ttl: float = 5.0,
    suspensions: Suspensions | None = None,
    recursion: Recursion | None = None,
) -> list[Stage]:
    """The resolver core's stages, in the order a lookup walks them: the one place that
    order is set (resolver/stages/stage.py describes what a stage is)."""
    delegation = (
        DelegationStage(delegations, store, on_change=l1.clear) if delegations is not None else None
    )
    stages: list[Stage | None] = [
        L1CacheStage(l1),  # this worker's memory; also the doors' synchronous fast path
        # a prefix an operator suspended: RC 605, before a referral or anything else
        SuspensionStage(suspensions, store, on_change=l1.clear)
        if suspensions is not None
        else None,
        # a client that allows recursion (REC), with --recursion: the answer of the node
        # that serves the handle (delegated here, or with --root-info not held here)
        RecursionStage(recursion, authority, delegation) if recursion is not None else None,
        delegation,  # served by another node (a delegated prefix): a referral
        AuthorityStage(authority),  # not homed here: answered before any shared tier
        # held by another server of this multi-server site: asked of it (L1 keeps the
        # answer for at most site_peer_ttl; neither Redis nor the registry hold it here)
        SitePeersStage(site, lifetimes, timeout=site_peer_timeout, ttl=site_peer_ttl)
        if site is not None
        else None,
        RedisCacheStage(redis, lifetimes) if redis is not None else None,
        RegistryStage(store, lifetimes, max_batch=max_batch),
    ]
    return [stage for stage in stages if stage is not None]
