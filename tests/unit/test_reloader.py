"""The coalescing reloader (resolver/stages/reloader.py) behind the delegation and
suspension stages: a burst of ``0.NA/`` invalidations costs at most two rebuilds, a
lookup after an invalidation sees the rebuilt map, and a lookup with no change pending
does not wait for a timer's rebuild. Rebuilds here block on events the test controls:
outcomes, never durations."""

from __future__ import annotations

import asyncio

from idnode.registry.delegations import Delegations
from idnode.registry.names import PrefixAuthority
from idnode.registry.prefix_applications import Suspensions
from idnode.resolver.stages.delegation import DelegationStage
from idnode.resolver.stages.reloader import Reloader
from idnode.resolver.stages.stage import Lookup, Resolution
from idnode.resolver.stages.suspension import SuspensionStage
from tests.unit.test_delegation import FakeStore

K = 50


class Gate:
    """A rebuild that counts itself and, while ``open`` is clear, blocks once begun."""

    def __init__(self) -> None:
        self.builds = 0
        self.began = asyncio.Event()
        self.open = asyncio.Event()
        self.open.set()

    async def build(self) -> None:
        self.builds += 1
        self.began.set()
        await self.open.wait()


def test_a_burst_of_changes_costs_at_most_two_rebuilds() -> None:
    async def go() -> None:
        g = Gate()
        r = Reloader(g.build, "test")
        for _ in range(K):  # all heard before the first rebuild begins: one rebuild
            r.changed()
        await r.fresh()
        assert g.builds == 1 and not r.dirty
        # heard while a rebuild runs: the running one, plus one queued for all of them
        g.open.clear()
        g.began.clear()
        r.changed()
        await g.began.wait()
        for _ in range(K):
            r.changed()
        waiters = [asyncio.ensure_future(r.fresh()) for _ in range(10)]
        g.open.set()
        await asyncio.gather(*waiters)
        assert g.builds == 3 and not r.dirty  # 1 before, then 2 for the K + 1 changes
        await r.close()

    asyncio.run(go())


def test_a_lookup_after_a_burst_sees_the_new_map_after_at_most_two_rebuilds() -> None:
    async def go() -> None:
        store = FakeStore()
        stage = DelegationStage(Delegations(PrefixAuthority(["88"])), store)  # type: ignore[arg-type]
        await stage.reload()
        reads = 0
        scan = store.prefix_records

        async def counted(limit: int = 100_000) -> list[tuple[str, bytes]]:
            nonlocal reads
            reads += 1
            return await scan(limit)

        store.prefix_records = counted  # type: ignore[method-assign]
        q = Lookup("88.166.1001/x", "88.166.1001/X")
        got = await stage.lookup(q)
        assert isinstance(got, Resolution) and got.referral == "0.NA/88.166.1001"
        del store.rows["0.NA/88.166.1001"]
        for _ in range(K):  # K other workers' writes of prefix handles heard at once
            stage.forget(["0.NA/88.166.1001"])
        got = await stage.lookup(q)  # waits for the rebuild that read after the changes
        assert isinstance(got, Resolution) and got.referral == "0.NA/88.166"
        assert 1 <= reads <= 2
        await stage.drain()

    asyncio.run(go())


def test_a_lookup_with_no_change_pending_does_not_wait_for_a_timer_rebuild() -> None:
    async def go() -> None:
        store = FakeStore()
        stage = DelegationStage(Delegations(PrefixAuthority(["88"])), store)  # type: ignore[arg-type]
        await stage.reload()
        g = Gate()
        g.open.clear()
        scan = store.prefix_records

        async def blocked(limit: int = 100_000) -> list[tuple[str, bytes]]:
            await g.build()
            return await scan(limit)

        store.prefix_records = blocked  # type: ignore[method-assign]
        timer = asyncio.ensure_future(stage.reload())  # the prefix-refresh timer's
        await g.began.wait()
        q = Lookup("88.166.1001/x", "88.166.1001/X")
        got = await stage.lookup(q)  # answered from the map it has
        assert isinstance(got, Resolution) and got.referral == "0.NA/88.166.1001"
        assert not timer.done()  # the timer's rebuild is still blocked
        # a change heard now: the next lookup waits for the rebuild queued after it
        del store.rows["0.NA/88.166.1001"]
        stage.forget(["0.NA/88.166.1001"])
        waiting = asyncio.ensure_future(stage.lookup(q))
        await asyncio.sleep(0)
        assert not waiting.done()
        g.open.set()
        got = await waiting
        assert isinstance(got, Resolution) and got.referral == "0.NA/88.166"
        await timer
        assert g.builds == 2
        await stage.drain()

    asyncio.run(go())


def test_a_failed_rebuild_lets_lookups_go_on_with_the_old_map() -> None:
    async def go() -> None:
        store = FakeStore()
        stage = DelegationStage(Delegations(PrefixAuthority(["88"])), store)  # type: ignore[arg-type]
        await stage.reload()

        async def down(limit: int = 100_000) -> list[tuple[str, bytes]]:
            raise OSError("registry down")

        store.prefix_records = down  # type: ignore[method-assign]
        stage.forget(["0.NA/88.166.1001"])
        got = await stage.lookup(Lookup("88.166.1001/x", "88.166.1001/X"))
        assert isinstance(got, Resolution) and got.referral == "0.NA/88.166.1001"
        assert not stage.reloader.dirty
        await stage.refresh()  # logged, not raised
        await stage.drain()

    asyncio.run(go())


class SuspendedStore:
    def __init__(self) -> None:
        self.suspended: list[tuple[str, str]] = []
        self.reads = 0

    async def suspended_prefixes(self) -> list[tuple[str, str]]:
        self.reads += 1
        await asyncio.sleep(0)
        return list(self.suspended)


def test_the_suspension_stage_coalesces_too() -> None:
    async def go() -> None:
        store = SuspendedStore()
        stage = SuspensionStage(Suspensions(False), store)  # type: ignore[arg-type]
        await stage.reload()
        q = Lookup("88.166/x", "88.166/X")
        assert await stage.lookup(q) is None
        store.suspended = [("88.166", "")]
        before = store.reads
        for _ in range(K):
            stage.forget(["0.NA/88.166"])
        got = await stage.lookup(q)
        assert isinstance(got, Resolution) and "88.166" in got.message
        assert 1 <= store.reads - before <= 2
        await stage.drain()

    asyncio.run(go())
