"""The prefix lifecycle's registry logic (registry/prefix_applications.py) on a real
store: an application cannot take over a prefix held here (a record, a delegation, a
suspension, a homed prefix), at apply and again at approve; one client address has a
bounded number of applications waiting; old pending ones expire; listings are newest
first, in pages; a failure after the first write of an approval still tells the caches;
a hosted approval publishes the site as it is then."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from idnode.registry import prefix_applications as pa
from idnode.registry.auth import Identity
from idnode.registry.bootstrap import create_prefix_admin, site_update
from idnode.registry.names import PrefixAuthority
from idnode.registry.prefix_applications import application_json
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import Outcome, Refusal, Store, open_store
from idnode.resolver.codec import (
    ResponseCode,
    SiteInfo,
    decode_site,
    decode_values,
    encode_site,
)
from tests.unit.test_delegation import site

RC = ResponseCode
OPERATOR = Identity("0.NA/88.166", 300)


E_SITE, S_SITE, X_SITE = site(2641), site(2642), site(2699)


class Node:
    def __init__(self, store: Store, svc: RegistryService, changed: list[str]) -> None:
        self.store, self.svc, self.changed = store, svc, changed
        self.apps = svc.applications

    async def delegate_by_records(self, prefix: str, to: SiteInfo = E_SITE) -> bytes:
        """0.NA/<prefix> made as an operator would by hand: E's admin, E's HS_SITE."""
        await create_prefix_admin(
            self.store, prefix, sealer=self.svc.sealer, secret=b"E's own secret"
        )

        def fn(before: bytes | None) -> Outcome:
            return Outcome(site_update(before, to) or b"", RC.SUCCESS, None, "delegated")

        await self.store.mutate("0.NA/" + prefix, fn, actor="test", op="DELEGATE")
        return await self.record(prefix)

    async def record(self, prefix: str) -> bytes:
        key = self.store.key("0.NA/" + prefix)
        return (await self.store.get_many([key]))[key]


def run(url: str, tmp: Path, test: Callable[[Node], Awaitable[None]]) -> None:
    async def go() -> None:
        store = open_store(url)
        await store.open()
        try:
            await store.home_prefix("88.166")
            changed: list[str] = []

            async def on_change(hs: list[str]) -> None:
                changed.extend(hs)

            svc = RegistryService(
                store,
                PrefixAuthority(["88.166"]),
                sealer=Sealer.from_file(tmp / "node.key", create=True),
                server_admins=[OPERATOR],
                on_change=on_change,
            )
            svc.applications.site = lambda: S_SITE
            await test(Node(store, svc, changed))
        finally:
            await store.close()

    asyncio.run(go())


async def refused(coro: Awaitable[Any], rc: int, text: str) -> None:
    with pytest.raises(Refusal) as got:
        await coro
    assert got.value.rc == rc and text in got.value.message, got.value.message


def test_a_delegated_prefix_cannot_be_taken_over(store_url: str, tmp_path: Path) -> None:
    async def t(n: Node) -> None:
        before = await n.delegate_by_records("88.166.1001")
        # apply: refused, the prefix is E's (a record with no application behind it)
        await refused(
            n.apps.apply("88.166.1001", secret=b"mallory", site=encode_site(X_SITE)),
            RC.HANDLE_ALREADY_EXISTS,
            "exists on this node already",
        )
        # applied before E's record was made, approved after: refused, E's record intact
        app = await n.apps.apply("88.166.1002", secret=b"mallory", site=encode_site(X_SITE))
        e2 = await n.delegate_by_records("88.166.1002")
        await refused(
            n.apps.approve(OPERATOR, app.id), RC.HANDLE_ALREADY_EXISTS, "exists on this node"
        )
        assert await n.record("88.166.1002") == e2
        assert await n.record("88.166.1001") == before
        # the operator sees whose it is
        (shown,) = await n.apps.applications(OPERATOR, "pending")
        doc = application_json(shown, (await n.apps.existing([shown]))[shown.id])
        assert any(v["type"] == "HS_SITE" for v in doc["existingRecord"])
        assert (await n.apps.get(OPERATOR, app.id)).status == "pending"

    run(store_url, tmp_path, t)


def test_nothing_under_a_delegation_suspension_or_homed_prefix(
    store_url: str, tmp_path: Path
) -> None:
    async def t(n: Node) -> None:
        await n.delegate_by_records("88.166.1001")
        # hosted under E's delegation: S would serve E's namespace
        await refused(
            n.apps.apply("88.166.1001.7", secret=b"m", hosted=True),
            RC.HANDLE_ALREADY_EXISTS,
            "under 88.166.1001",
        )
        app = await n.apps.apply("88.166.1003.7", secret=b"m", hosted=True)
        await n.delegate_by_records("88.166.1003")
        await refused(
            n.apps.approve(OPERATOR, app.id), RC.HANDLE_ALREADY_EXISTS, "under 88.166.1003"
        )
        assert "88.166.1003.7" not in n.apps.authority.homed
        # under a suspended prefix
        await n.store.suspend_prefix("88.166.1004", "unpaid", "op")
        await refused(
            n.apps.apply("88.166.1004.1", secret=b"m", hosted=True), RC.PREFIX_LIMIT, "suspended"
        )
        app = await n.apps.apply("88.166.1005", secret=b"m", hosted=True)
        await n.store.suspend_prefix("88.166.1005", "unpaid", "op")
        await refused(n.apps.approve(OPERATOR, app.id), RC.PREFIX_LIMIT, "suspended")
        # homed here
        await n.store.home_prefix("88.166.1006")
        n.apps.authority.replace(await n.store.homed_prefixes())
        await refused(
            n.apps.apply("88.166.1006", secret=b"m", hosted=True),
            RC.HANDLE_ALREADY_EXISTS,
            "homed on this node",
        )
        app = await n.apps.apply("88.166.1007", secret=b"m", hosted=True)
        await n.store.home_prefix("88.166.1007")
        n.apps.authority.replace(await n.store.homed_prefixes())
        await refused(n.apps.approve(OPERATOR, app.id), RC.HANDLE_ALREADY_EXISTS, "homed")
        # a free prefix is still approved
        ok = await n.apps.apply("88.166.1008", secret=b"fine", hosted=True)
        assert (await n.apps.approve(OPERATOR, ok.id)).status == "approved"

    run(store_url, tmp_path, t)


def test_a_failure_after_the_first_write_still_tells_the_caches_and_can_be_retried(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def t(n: Node) -> None:
        app = await n.apps.apply("88.166.1001", secret=b"acme", site=encode_site(E_SITE))

        async def broken(row: Any, who: Any) -> None:
            raise RuntimeError("the registry went away")

        monkeypatch.setattr(n.apps, "_delegate", broken)
        with pytest.raises(RuntimeError):
            await n.apps.approve(OPERATOR, app.id)
        assert n.changed == ["0.NA/88.166.1001"]  # create_prefix_admin wrote
        monkeypatch.undo()
        # the same application, approved again: its own earlier write is no takeover
        done = await n.apps.approve(OPERATOR, app.id)
        assert done.status == "approved"
        values = decode_values(await n.record("88.166.1001"))
        assert [decode_site(v.data) for v in values if v.type == "HS_SITE"] == [E_SITE]

        # decided meanwhile (decide_prefix_application False): written, so told as well
        n.changed.clear()
        other = await n.apps.apply("88.166.1002", secret=b"b", hosted=True)

        async def decided(*args: Any, **kw: Any) -> bool:
            return False

        monkeypatch.setattr(n.store, "decide_prefix_application", decided)
        await refused(n.apps.approve(OPERATOR, other.id), RC.HANDLE_ALREADY_EXISTS, "meanwhile")
        assert n.changed == ["0.NA/88.166.1002"]

    run(store_url, tmp_path, t)


def test_a_hosted_approval_publishes_the_site_as_it_is_then(store_url: str, tmp_path: Path) -> None:
    async def t(n: Node) -> None:
        current = [S_SITE]
        n.apps.site = lambda: current[0]
        app = await n.apps.apply("88.166.1001", secret=b"acme", hosted=True)
        current[0] = later = site(2642, serial=7)  # e.g. a peer's key learnt since
        await n.apps.approve(OPERATOR, app.id)
        values = decode_values(await n.record("88.166.1001"))
        assert [decode_site(v.data) for v in values if v.type == "HS_SITE"] == [later]

    run(store_url, tmp_path, t)


def test_one_address_cannot_fill_the_queue_old_ones_expire_newest_listed_first(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def t(n: Node) -> None:
        ids = [
            (await n.apps.apply(f"88.166.{i}", secret=b"s", hosted=True, source="192.0.2.1")).id
            for i in range(pa.MAX_PENDING_PER_SOURCE)
        ]
        await refused(
            n.apps.apply("88.166.99", secret=b"s", hosted=True, source="192.0.2.1"),
            RC.HANDLE_ALREADY_EXISTS,
            "from 192.0.2.1",
        )
        other = await n.apps.apply("88.166.99", secret=b"s", hosted=True, source="192.0.2.2")
        # newest first, in pages
        page = await n.apps.applications(OPERATOR, "pending", limit=2)
        assert [a.id for a in page] == [other.id, ids[-1]]
        rest = await n.apps.applications(OPERATOR, "pending", after=page[-1].id)
        assert [a.id for a in rest] == ids[-2::-1]
        # expired after PENDING_DAYS: rejected, and the address may apply again
        monkeypatch.setattr(pa, "PENDING_DAYS", -1)
        assert await n.apps.expire() == pa.MAX_PENDING_PER_SOURCE + 1
        monkeypatch.undo()
        old = await n.apps.get(OPERATOR, ids[0])
        assert (old.status, old.decided_by) == ("rejected", "node")
        assert "expired" in old.reason
        again = await n.apps.apply("88.166.0", secret=b"s", hosted=True, source="192.0.2.1")
        assert again.status == "pending"

    run(store_url, tmp_path, t)
