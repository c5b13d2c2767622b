"""The registry reads a write makes before its transaction, against the real stores.

A value write (REST PUT ?index=, MODIFY_VALUE, ...) reads the handle and its prefix
handles in one ``get_many``; the HS_VLIST groups its admins name cost another read only
when they live on a handle not read yet. The stores are real: a thin wrapper counts
``get_many`` and ``mutate`` calls and passes them on, so the database still answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import pytest

from idnode.registry.auth import Identity
from idnode.registry.delegations import Delegations
from idnode.registry.names import PrefixAuthority
from idnode.registry.permissions import Permissions
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import HandleRecord, Store, open_store
from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode_values,
    encode_admin,
    encode_site,
    encode_values,
)
from idnode.resolver.codec.values import ValueReference
from idnode.resolver.codec.vlist import encode_vlist

AP = AdminPermission
RC = ResponseCode
ALL = 0x0FFF
ROOT = Identity("0.NA/88.166", 300)  # the admin of the prefix 88.166 (no server admin)
ALICE = Identity("0.NA/88.166.1001", 300)  # the admin of the derived prefix 88.166.1001
BOB = Identity("0.NA/88.166.1001.staff", 300)  # a member of groups only
STRANGER = Identity("0.NA/88.166.1001.staff", 301)
ALICE_REF = (ALICE.handle, ALICE.index)
STAFF = "0.NA/88.166.1001.STAFF"  # BOB's handle, as the store keys it
ITEM = "88.166.1001/item"
URL = HandleValue(1, "URL", b"https://example.cn/a")
NEW = HandleValue(2001, "URL", b"https://example.cn/2001")

Events = list[tuple[str, tuple[str, ...]]]


def admin(perms: int, handle: str, index: int, at: int = 100) -> HandleValue:
    return HandleValue(at, "HS_ADMIN", encode_admin(AdminRecord(perms, handle, index)))


def vlist(at: int, *members: tuple[str, int]) -> HandleValue:
    return HandleValue(at, "HS_VLIST", encode_vlist([ValueReference(h, i) for h, i in members]))


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


async def open_registry(
    url: str, tmp: Path, records: dict[str, Sequence[HandleValue]], case_sensitive: bool = False
) -> tuple[Store, RegistryService]:
    store = open_store(url, case_sensitive)
    await store.open()
    await store.home_prefix("88.166")
    await store.put_many([HandleRecord(h, encode_values(list(v))) for h, v in records.items()])
    sealer = Sealer.from_file(tmp / "node.key", create=True)
    return store, RegistryService(store, PrefixAuthority(["88.166"]), sealer=sealer)


def count(store: Store, monkeypatch: pytest.MonkeyPatch) -> Events:
    """Record every get_many (its keys) and mutate (its handle), in order; the real
    store still answers both."""
    events: Events = []
    get_many, mutate = store.get_many, store.mutate

    async def counted_get_many(keys: Sequence[str]) -> dict[str, bytes]:
        events.append(("get_many", tuple(keys)))
        return await get_many(keys)

    async def counted_mutate(handle: str, *args: Any, **kw: Any) -> Any:
        events.append(("mutate", (handle,)))
        return await mutate(handle, *args, **kw)

    monkeypatch.setattr(store, "get_many", counted_get_many)
    monkeypatch.setattr(store, "mutate", counted_mutate)
    return events


def reads_before_mutate(events: Events) -> list[tuple[str, ...]]:
    """The keys of each get_many before the write's transaction (which must come)."""
    assert any(e[0] == "mutate" for e in events), events
    first = next(i for i, e in enumerate(events) if e[0] == "mutate")
    assert all(e[0] == "get_many" for e in events[:first]), events
    return [keys for _, keys in events[:first]]


async def stored(store: Store, handle: str) -> tuple[HandleValue, ...] | None:
    raw = (await store.get_many([store.key(handle)])).get(store.key(handle))
    return None if raw is None else decode_values(raw)


def prefixes(alice_perms: int = ALL) -> dict[str, Sequence[HandleValue]]:
    return {
        "0.NA/88.166": (admin(ALL, ROOT.handle, ROOT.index),),
        "0.NA/88.166.1001": (admin(alice_perms, ALICE.handle, ALICE.index),),
    }


WRITES: dict[str, Callable[[RegistryService, Identity], Coroutine[Any, Any, Any]]] = {
    "put_values": lambda svc, who: svc.put_values(ITEM, (NEW,), who),
    "add_values": lambda svc, who: svc.add_values(ITEM, (NEW,), who),
    "modify_values": lambda svc, who: svc.modify_values(ITEM, (URL,), who),
    "remove_values": lambda svc, who: svc.remove_values(ITEM, (1,), who),
    "delete": lambda svc, who: svc.delete(ITEM, who),
    "create_overwrite": lambda svc, who: svc.create(ITEM, (URL, NEW), who, overwrite=True),
}


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_governed_by_its_prefix_reads_once(
    write: str, store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefix handle's admin names a key of the prefix handle itself: the read of the
    handle and its prefix handles already holds it, so the groups cost no second read."""

    async def go() -> None:
        store, svc = await open_registry(store_url, tmp_path, {**prefixes(), ITEM: (URL,)})
        try:
            events = count(store, monkeypatch)
            assert (await WRITES[write](svc, ALICE)).code == RC.SUCCESS
            (keys,) = reads_before_mutate(events)
            assert set(keys) == {"88.166.1001/ITEM", "0.NA/88.166.1001", "0.NA/88.166", "0.NA/88"}
        finally:
            await store.close()

    run(go)


def test_a_put_on_a_handle_with_its_own_admin_group_on_another_handle(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The handle's own HS_ADMIN names an HS_VLIST group on another handle, whose member
    is a group on a third: every level is honoured; only the handles not read yet are."""

    async def go() -> None:
        store, svc = await open_registry(
            store_url,
            tmp_path,
            {
                **prefixes(),
                ITEM: (URL, admin(AP.ADD_VALUE | AP.MODIFY_VALUE, "88.166.1001/team", 200, 2)),
                "88.166.1001/team": (vlist(200, ("88.166.1001/crew", 201)),),
                "88.166.1001/crew": (vlist(201, (BOB.handle, BOB.index)),),
            },
        )
        try:
            events = count(store, monkeypatch)
            assert (await svc.put_values(ITEM, (NEW,), BOB)).code == RC.SUCCESS
            # the handle and its prefix handles, then each group level's handles not read
            # yet (the members' too: a member may be a group); never one read twice
            reads = reads_before_mutate(events)
            assert len(reads) == 4 and ITEM.upper() in reads[0]
            assert reads[1:] == [("88.166.1001/TEAM",), ("88.166.1001/CREW",), (STAFF,)]
            # the handle's own HS_ADMIN governs it: not the prefix's admin, nor a non-member
            for who in (ALICE, STRANGER):
                result = await svc.put_values(ITEM, (URL,), who)
                assert result.code == RC.INSUFFICIENT_PERMISSIONS
            # membership grants only the admin record's bits
            assert (await svc.remove_values(ITEM, (1,), BOB)).code == RC.INSUFFICIENT_PERMISSIONS
            after = {v.index: v for v in await stored(store, ITEM) or ()}
            assert sorted(after) == [1, 2, 2001] and after[1] == URL  # BOB's put alone
        finally:
            await store.close()

    run(go)


def test_a_group_on_the_handle_itself_is_not_read_again(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        group = vlist(200, (BOB.handle, BOB.index))
        store, svc = await open_registry(
            store_url,
            tmp_path,
            {**prefixes(), ITEM: (URL, admin(AP.MODIFY_VALUE, ITEM, 200, 2), group)},
        )
        try:
            events = count(store, monkeypatch)
            changed = HandleValue(1, "URL", b"https://example.cn/b")
            assert (await svc.put_values(ITEM, (changed,), BOB)).code == RC.SUCCESS
            # the group's handle is not read again: only its member's (a group, maybe?)
            reads = reads_before_mutate(events)
            assert len(reads) == 2 and ITEM.upper() in reads[0] and reads[1] == (STAFF,)
            assert (await svc.put_values(ITEM, (URL,), STRANGER)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )
        finally:
            await store.close()

    run(go)


def test_a_derived_prefix_without_its_handle_is_governed_by_its_parent(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """88.166.1002 has no prefix handle: 0.NA/88.166's admins govern it. 88.166.1001 has
    one: only its admins do, not its parent's."""

    async def go() -> None:
        other = "88.166.1002/item"
        store, svc = await open_registry(
            store_url, tmp_path, {**prefixes(), ITEM: (URL,), other: (URL,)}
        )
        try:
            events = count(store, monkeypatch)
            assert (await svc.put_values(other, (NEW,), ROOT)).code == RC.SUCCESS
            (keys,) = reads_before_mutate(events)
            assert set(keys) == {"88.166.1002/ITEM", "0.NA/88.166.1002", "0.NA/88.166", "0.NA/88"}
            assert (await svc.put_values(other, (NEW,), ALICE)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )
            assert (await svc.put_values(ITEM, (NEW,), ROOT)).code == RC.INSUFFICIENT_PERMISSIONS
            assert await stored(store, ITEM) == (URL,)
        finally:
            await store.close()

    run(go)


def test_a_write_refused_for_lack_of_permission(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await open_registry(
            store_url, tmp_path, {**prefixes(AP.ADD_VALUE), ITEM: (URL,)}
        )
        try:
            events = count(store, monkeypatch)
            changed = HandleValue(1, "URL", b"https://example.cn/b")
            result = await svc.put_values(ITEM, (changed,), ALICE)  # MODIFY_VALUE is needed
            assert result.code == RC.INSUFFICIENT_PERMISSIONS
            assert "MODIFY_VALUE" in result.message
            assert len(reads_before_mutate(events)) == 1
            assert await stored(store, ITEM) == (URL,)
            assert (await store.audit_for(ITEM))[0].rc == RC.INSUFFICIENT_PERMISSIONS
            assert (await svc.put_values(ITEM, (NEW,), ALICE)).code == RC.SUCCESS  # ADD_VALUE
        finally:
            await store.close()

    run(go)


def _delegations() -> Delegations:
    """88.166 delegated to another node's site (as tests/unit/test_delegation.py has it)."""
    site = SiteInfo(
        servers=(
            ServerInfo.at(
                "127.0.0.1",
                server_id=1,
                interfaces=(Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.TCP, 1),),
            ),
        ),
        serial=1,
    )
    prefix = [admin(ALL, ROOT.handle, ROOT.index), HandleValue(1, "HS_SITE", encode_site(site))]
    d = Delegations(PrefixAuthority(["88"]))
    d.build(d.candidates([("0.NA/88.166", encode_values(prefix))]), {})
    return d


@pytest.mark.parametrize("case_sensitive", [False, True], ids=["folded", "case-sensitive"])
def test_context_for_answers_as_the_separate_reads_did(
    case_sensitive: bool, store_url: str, tmp_path: Path
) -> None:
    """context_for(h) == (prefix_admins(h), groups_for(h, prefix_admins(h))), also for a
    delegated handle, a prefix handle, admins spelled in another case and broken ones."""

    async def go() -> None:
        store, svc = await open_registry(
            store_url,
            tmp_path,
            {
                "0.NA/88.166": (admin(ALL, ROOT.handle, ROOT.index),),
                "0.NA/88.166.1001": (
                    admin(ALL, "0.na/88.166.1001", 200),
                    vlist(200, ("0.NA/88.166.1001", 201), ("88.166.1001/Team", 200)),
                    vlist(201, (BOB.handle, BOB.index)),
                ),
                ITEM: (URL, admin(AP.MODIFY_VALUE, "88.166.1001/team", 200, 2)),
                "88.166.1001/team": (vlist(200, ("88.166.1001/crew", 201)),),
                "88.166.1001/Team": (vlist(200, (STRANGER.handle, STRANGER.index)),),
                "88.166.1001/crew": (
                    vlist(201, ("88.166.1001/crew", 202)),
                    HandleValue(202, "HS_VLIST", b"\xff"),  # broken: grants nothing
                ),
                "88.166.1001/self": (admin(ALL, "88.166.1001/self", 200), vlist(200, ALICE_REF)),
                "88.166.1001/broken": (HandleValue(100, "HS_ADMIN", b"\x00"),),
            },
            case_sensitive,
        )
        perms = svc.permissions
        handles = [
            ITEM,
            "88.166.1001/ITEM",
            "88.166.1001/self",
            "88.166.1001/broken",
            "88.166.1001/none",
            "88.166.1002/none",
            "88.166/x",
            "0.NA/88.166.1001",
            "0.NA/88.166.1001.9",
        ]
        try:
            for delegations in (None, _delegations()):
                perms.delegations = delegations
                for h in handles:
                    prefix_admins = await perms.prefix_admins(h)
                    expected = (prefix_admins, await perms.groups_for(h, prefix_admins))
                    assert await perms.context_for(h) == expected, (h, delegations)
                    parent = "88.166/"  # as a derived prefix handle's create checks it
                    prefix_admins = await perms.prefix_admins(parent)
                    expected = (prefix_admins, await perms.groups_for(h, prefix_admins))
                    assert await perms.context_for(h, parent) == expected, (h, delegations)
                    assert await perms.context_for(h, "") == ([], await perms.groups_for(h, []))
            perms.delegations = _delegations()
            assert (await perms.context_for("88.166/x"))[0] == []  # delegated: none here
            assert (await perms.context_for("88.166/x", "88.166/"))[0] != []
        finally:
            await store.close()

    run(go)


def test_a_store_read_is_not_seeded_by_another_permissions(store_url: str) -> None:
    """Permissions keeps nothing between calls: a change is seen by the next write."""

    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        try:
            perms = Permissions(store)
            await store.put_many([HandleRecord(ITEM, encode_values([URL]))])
            assert await perms.context_for(ITEM) == ([], {})
            group = vlist(200, ALICE_REF)
            record = [admin(ALL, ITEM, 200, 2), group]
            await store.put_many([HandleRecord(ITEM, encode_values(record))])
            assert await perms.context_for(ITEM) == ([], {(ITEM.upper(), 200): [ALICE_REF]})
        finally:
            await store.close()

    run(go)
