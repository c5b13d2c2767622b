"""Delegation stage: a handle under a prefix another node serves gets a referral (302 for
handles, 303 for prefix handles; registry/delegations.py says which and why), before
the authority stage, any shared cache or the registry is asked.

The map is this worker's, built from the registry's prefix records at start, rebuilt
when a write touches a ``0.NA/`` handle (the core hands every invalidation to
:meth:`DelegationStage.forget`; the writer's own worker rebuilds before the write is
acknowledged, in :meth:`DelegationStage.invalidate`) and on the node's prefix-refresh
timer (:meth:`DelegationStage.reload`). Rebuilds are coalesced (reloader.py): a burst
of changes costs at most two, and a lookup waits only when a change is pending.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from idnode.registry.delegations import Delegations, service_handle
from idnode.registry.names import normalize
from idnode.registry.store import Store

from ..codec import ResponseCode
from ..l1 import Entry
from .reloader import RegistryMapStage
from .stage import Lookup, Resolution

log = logging.getLogger("idnode.delegation")


class DelegationStage(RegistryMapStage):
    what = "the delegated prefixes"

    def __init__(
        self,
        delegations: Delegations,
        store: Store,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.delegations = delegations
        super().__init__(store, on_change)

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        # Another worker's write of a prefix handle was just heard: answer from the
        # rebuilt map, not the one it replaces (at once when no change is pending).
        await self.reloader.fresh()
        r = self.delegations.referral(q.key)
        if r is None:
            if "/" in q.key:
                return None
            sites = self.delegations.prefix_sites(q.key)  # "88.166.1001": where it lives
            return None if sites is None else Resolution(ResponseCode.SUCCESS, sites)
        d = r.delegation
        return Resolution(r.response_code, d.sites_wire, d.describe(), d.referral_handle)

    async def _rebuild(self) -> bool:
        records = await self.store.prefix_records()
        candidates = self.delegations.candidates(records)
        services = [
            normalize(s, self.delegations.case_sensitive)
            for _, values in candidates
            if (s := service_handle(values)) is not None
        ]
        held = await self.store.get_many(sorted(set(services))) if services else {}
        own = self.delegations.own_sites(records)
        if not self.delegations.build(candidates, held, own):
            return False
        log.info(
            "delegated prefixes: %s",
            ", ".join(sorted(self.delegations.prefixes)) or "(none)",
        )
        return True
