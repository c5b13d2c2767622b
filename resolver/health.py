"""Is this worker able to answer? The parts of a node /healthz looks at: the registry must
respond; Redis only degrades. The HTTP door renders the report; it does not look itself.
"""

from __future__ import annotations

import asyncio

from idnode.registry.names import PrefixAuthority
from idnode.registry.store import HandleStore

from .l1 import L1Cache
from .l2 import RedisTier


class HealthCheck:
    """Is this worker able to answer? The registry must respond; Redis only degrades."""

    def __init__(
        self, store: HandleStore, redis: RedisTier | None, authority: PrefixAuthority, l1: L1Cache
    ) -> None:
        # The parts it looks at, from the node: the resolver core is a chain of stages
        # and holds none of them itself.
        self.store = store
        self.redis = redis
        self.authority = authority
        self.l1 = l1

    async def check(self) -> dict[str, object]:
        report: dict[str, object] = {"status": "ok"}
        try:
            await asyncio.wait_for(self.store.get_many(["0.NA/HEALTH"]), 2.0)
            report["registry"] = "ok"
        except Exception as exc:
            report["status"] = "unavailable"
            report["registry"] = f"error: {exc}"
        if self.redis is not None:
            try:
                await asyncio.wait_for(self.redis.ping(), 1.0)
                report["redis"] = "ok"
            except Exception as exc:
                report["redis"] = f"degraded: {exc}"
        report["homed_prefixes"] = sorted(self.authority.homed)
        report["l1_entries"] = len(self.l1)
        return report
