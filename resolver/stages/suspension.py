"""Suspension stage: a handle under a prefix an operator suspended answers RC 605
(PREFIX_LIMIT) with "prefix P is suspended", on every door, before a referral, the
authority stage, any shared cache or the registry is asked.

Why 605: it is the IDIS code for a prefix that may not be served now (the IDIS SDK
and the SNMS know it), it is final (a client does not try another server of the site,
as it would after 301, 3 or 7), and the REST door's reference mapping makes it a 403
with the JSON body and the message. RC 2 would say "the server failed" and REST 500.

The set is this worker's (registry/prefix_applications.py ``Suspensions``), shared with
the write path; it is read at start, rebuilt when a ``0.NA/`` key is invalidated (a
suspension or resumption invalidates ``0.NA/<prefix>``, which reaches every worker and
node through Redis or the change feed; the writer's worker rebuilds before it answers)
and on the node's prefix-refresh timer, coalesced as the delegation map's
(reloader.py). A change clears L1, which sits in front.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from idnode.registry.prefix_applications import (
    SUSPENDED_RC,
    PrefixApplications,
    Suspensions,
    suspended_message,
)
from idnode.registry.store import Store

from ..l1 import Entry
from .reloader import RegistryMapStage
from .stage import Lookup, Resolution

log = logging.getLogger("idnode.suspension")


class SuspensionStage(RegistryMapStage):
    what = "the suspended prefixes"

    def __init__(
        self,
        suspensions: Suspensions,
        store: Store,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.suspensions = suspensions
        super().__init__(store, on_change)

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        await self.reloader.fresh()  # a suspension just heard of: answer after it
        if not self.suspensions:
            return None
        p = self.suspensions.of(q.key)
        if p is None:
            return None
        return Resolution(SUSPENDED_RC, message=suspended_message(p))

    async def _rebuild(self) -> bool:
        if not self.suspensions.replace(await self.store.suspended_prefixes()):
            return False
        log.info("suspended prefixes: %s", ", ".join(self.suspensions.prefixes) or "(none)")
        return True


UPWARD_POLL_SECONDS = 2.0
SUSPENSION_REFRESH_SECONDS = 30.0


async def prefix_lifecycle_timer(stage: SuspensionStage, applications: PrefixApplications) -> None:
    """The node's timer for the prefix lifecycle: queued upward registrations that are
    due are tried (each worker polls; one claims a row), and the suspended prefixes are
    re-read now and then (as the prefix-refresh timer does for homed prefixes)."""
    since = 0.0
    while True:
        await asyncio.sleep(UPWARD_POLL_SECONDS)
        since += UPWARD_POLL_SECONDS
        try:
            await applications.retry_upward()
        except Exception as exc:
            log.warning("cannot retry queued upward registrations: %s", exc)
        if since >= SUSPENSION_REFRESH_SECONDS:
            since = 0.0
            await stage.refresh()
