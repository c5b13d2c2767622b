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

import contextlib
import logging
from collections.abc import Callable, Sequence

from idnode.registry.delegations import Delegations, service_handle
from idnode.registry.names import is_prefix_handle, normalize
from idnode.registry.store import Store

from ..codec import ResponseCode
from ..l1 import Entry
from .reloader import Reloader
from .stage import Lookup, Resolution, Stage

log = logging.getLogger("idnode.delegation")


def touches_prefixes(keys: Sequence[str]) -> bool:
    return any(is_prefix_handle(k) for k in keys)


class DelegationStage(Stage):
    def __init__(
        self,
        delegations: Delegations,
        store: Store,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.delegations = delegations
        self.store = store
        # Called when the map changed: a cache in front of this stage (L1) may hold
        # handles that are now referred elsewhere.
        self.on_change = on_change
        # One rebuild at a time and at most one queued, however many changes are heard.
        self.reloader = Reloader(self._build, "the delegated prefixes")

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

    async def reload(self) -> None:
        """Rebuild the map from the registry (raises if the registry cannot be read); a
        timer's rebuild: lookups do not wait for it."""
        await self.reloader.reload()

    async def _build(self) -> None:
        records = await self.store.prefix_records()
        candidates = self.delegations.candidates(records)
        services = [
            normalize(s, self.delegations.case_sensitive)
            for _, values in candidates
            if (s := service_handle(values)) is not None
        ]
        held = await self.store.get_many(sorted(set(services))) if services else {}
        own = self.delegations.own_sites(records)
        if self.delegations.build(candidates, held, own):
            log.info(
                "delegated prefixes: %s",
                ", ".join(sorted(self.delegations.prefixes)) or "(none)",
            )
            if self.on_change is not None:
                self.on_change()

    async def refresh(self) -> None:
        """:meth:`reload`, logging (not raising) when the registry cannot be read."""
        with contextlib.suppress(Exception):  # logged by the reloader
            await self.reload()

    def forget(self, keys: Sequence[str]) -> None:
        if touches_prefixes(keys):
            self.reloader.changed()

    def forget_all(self) -> None:
        self.reloader.changed()

    async def invalidate(self, keys: Sequence[str]) -> None:
        # This worker's own write: rebuild before the write is acknowledged, so the
        # writer's next lookup here already sees it (never raises: the write committed).
        if touches_prefixes(keys):
            await self.reloader.changed_and_wait()

    async def catch_up(self, keys: Sequence[str], *, everything: bool = False) -> None:
        if everything or touches_prefixes(keys):
            await self.reloader.changed_and_wait()

    async def drain(self) -> None:
        await self.reloader.close()
