"""The registry service against real stores: every permission bit, refusals, the audit log."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from idnode.registry.auth import Identity
from idnode.registry.names import PrefixAuthority
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import Store, open_store
from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    ResponseCode,
    decode_values,
    encode_admin,
)

AP = AdminPermission
RC = ResponseCode
ALICE = Identity("0.NA/88.166.1001", 300)
URL = HandleValue(1, "URL", b"https://example.cn/a")


def admin_value(perms: int, who: Identity = ALICE, index: int = 100) -> HandleValue:
    return HandleValue(index, "HS_ADMIN", encode_admin(AdminRecord(perms, who.handle, who.index)))


async def service(url: str, tmp: Path, **kw: Any) -> tuple[Store, RegistryService, list[str]]:
    store = open_store(url)
    await store.open()
    await store.home_prefix("88.166")
    changed: list[str] = []

    async def on_change(hs: list[str]) -> None:
        changed.extend(hs)

    sealer = Sealer.from_file(tmp / "node.key", create=True)
    svc = RegistryService(
        store, PrefixAuthority(["88.166"]), sealer=sealer, on_change=on_change, **kw
    )
    return store, svc, changed


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


async def set_prefix_admin(svc: RegistryService, perms: int) -> None:
    root = Identity("0.NA/88.166", 300)
    svc.server_admins.add(("0.NA/88.166", 300))
    await svc.create("0.NA/88.166.1001", (admin_value(perms),), root, overwrite=True)
    svc.server_admins.discard(("0.NA/88.166", 300))


async def values(store: Store, handle: str) -> tuple[HandleValue, ...] | None:
    raw = (await store.get_many([store.key(handle)])).get(store.key(handle))
    return None if raw is None else decode_values(raw)


# (permission needed, operation, setup the handle first?)
OPS: list[tuple[int, str]] = [
    (AP.ADD_HANDLE, "create"),
    (AP.DELETE_HANDLE, "delete"),
    (AP.ADD_VALUE, "add"),
    (AP.ADD_ADMIN, "add_admin"),
    (AP.MODIFY_VALUE, "modify"),
    (AP.MODIFY_ADMIN, "modify_admin"),
    (AP.REMOVE_VALUE, "remove"),
    (AP.REMOVE_ADMIN, "remove_admin"),
    (AP.LIST_HANDLES, "list"),
    (AP.ADD_DERIVED_PREFIX, "create_prefix"),
    (AP.DELETE_DERIVED_PREFIX, "delete_prefix"),
]


async def do(svc: RegistryService, op: str) -> int:
    h = "88.166.1001/item"
    if op == "create":
        return (await svc.create(h, (URL,), ALICE)).code
    if op == "delete":
        return (await svc.delete(h, ALICE)).code
    if op == "add":
        return (await svc.add_values(h, (HandleValue(7, "EMAIL", b"a@b.c"),), ALICE)).code
    if op == "add_admin":
        return (await svc.add_values(h, (admin_value(0x0FFF, index=101),), ALICE)).code
    if op == "modify":
        return (await svc.modify_values(h, (HandleValue(1, "URL", b"https://new"),), ALICE)).code
    if op == "modify_admin":
        return (await svc.modify_values(h, (admin_value(0x0FFF, index=2),), ALICE)).code
    if op == "remove":
        return (await svc.remove_values(h, (1,), ALICE)).code
    if op == "remove_admin":
        return (await svc.remove_values(h, (2,), ALICE)).code
    if op == "create_prefix":  # a sub-prefix of ALICE's prefix
        return (await svc.create("0.NA/88.166.1001.9", (URL,), ALICE)).code
    if op == "delete_prefix":
        return (await svc.delete("0.NA/88.166.1001.8", ALICE)).code
    return (await svc.list_handles("0.NA/88.166.1001", ALICE)).code


ROOT = Identity("0.NA/88.166", 300)


async def grant(svc: RegistryService, perms: int) -> None:
    """Set what ALICE may do: on the handle's own HS_ADMIN (index 2), which takes
    precedence over the prefix's, and on the prefix handle (for create and list)."""
    await set_prefix_admin(svc, perms)
    svc.server_admins.add(("0.NA/88.166", 300))
    try:
        if await values(svc.store, "88.166.1001/item") is not None:
            await svc.modify_values("88.166.1001/item", (admin_value(perms, ALICE, 2),), ROOT)
    finally:
        svc.server_admins.discard(("0.NA/88.166", 300))


@pytest.mark.parametrize(("bit", "op"), OPS, ids=[op for _, op in OPS])
def test_every_permission_bit(bit: int, op: str, sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc, _ = await service(sqlite_url, tmp_path)
        try:
            if op == "delete_prefix":  # the derived prefix to delete
                svc.server_admins.add(("0.NA/88.166", 300))
                created = await svc.create("0.NA/88.166.1001.8", (URL,), ROOT)
                svc.server_admins.discard(("0.NA/88.166", 300))
                assert created.code == RC.SUCCESS
            if op not in ("create", "create_prefix", "delete_prefix"):
                svc.server_admins.add(("0.NA/88.166", 300))
                created = await svc.create(
                    "88.166.1001/item", (URL, admin_value(0, ALICE, 2)), ROOT
                )
                svc.server_admins.discard(("0.NA/88.166", 300))
                assert created.code == RC.SUCCESS
            # every bit but this one: refused, nothing changes, the refusal is audited
            await grant(svc, 0x0FFF & ~bit)
            target = {
                "list": "0.NA/88.166.1001",
                "create_prefix": "0.NA/88.166.1001.9",
                "delete_prefix": "0.NA/88.166.1001.8",
            }.get(op, "88.166.1001/item")
            before = await values(store, target)
            assert await do(svc, op) == RC.INSUFFICIENT_PERMISSIONS
            assert await values(store, target) == before
            audit = await store.audit_for(target)
            assert audit[0].rc == RC.INSUFFICIENT_PERMISSIONS and audit[0].actor == str(ALICE)
            # this bit alone: allowed
            await grant(svc, bit)
            assert await do(svc, op) == RC.SUCCESS
        finally:
            await store.close()

    run(go)


def test_write_results_and_codes(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc, changed = await service(store_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            changed.clear()
            h = "88.166.1001/A-1"
            assert (await svc.create(h, (URL,), ALICE)).code == RC.SUCCESS
            assert changed == [h]
            assert (await svc.create(h, (URL,), ALICE)).code == RC.HANDLE_ALREADY_EXISTS
            assert (await svc.create(h, (URL,), ALICE, overwrite=True)).code == RC.SUCCESS
            assert (await svc.add_values(h, (URL,), ALICE)).code == RC.VALUE_ALREADY_EXISTS
            assert (await svc.modify_values(h, (HandleValue(9, "X", b""),), ALICE)).code == (
                RC.VALUES_NOT_FOUND
            )
            assert (await svc.remove_values(h, (9,), ALICE)).code == RC.VALUES_NOT_FOUND
            assert (await svc.delete("88.166.1001/none", ALICE)).code == RC.HANDLE_NOT_FOUND
            assert (await svc.create("99.1/x", (URL,), ALICE)).code == (
                RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
            )
            assert (await svc.create("88.166.1001/", (URL,), ALICE)).code == RC.INVALID_HANDLE
            bad_admin = HandleValue(5, "HS_ADMIN", b"\x00")
            assert (await svc.add_values(h, (bad_admin,), ALICE)).code == RC.INVALID_VALUE
            dup = (HandleValue(3, "A", b""), HandleValue(3, "B", b""))
            assert (await svc.add_values(h, dup, ALICE)).code == RC.INVALID_VALUE
            minted = await svc.create("88.166.1001", (URL,), ALICE, mint=True)
            assert minted.code == RC.SUCCESS and minted.handle.startswith("88.166.1001/")
            listing = await svc.list_handles("0.NA/88.166.1001", ALICE)
            assert listing.code == RC.SUCCESS and h in listing.handles
            assert (await svc.delete(h, ALICE)).code == RC.SUCCESS
            assert await values(store, h) is None
            ops = [e.op for e in reversed(await store.audit_for(h))]
            assert ops[:3] == ["CREATE", "CREATE", "CREATE"] and ops[-1] == "DELETE"
            assert all(e.actor == str(ALICE) for e in await store.audit_for(h))
        finally:
            await store.close()

    run(go)


def test_results_say_what_changed(sqlite_url: str, tmp_path: Path) -> None:
    """A write's typed result: code, message, whether the registry changed, the handle
    written and whether a create replaced one; a refusal changes nothing and says why."""

    async def go() -> None:
        store, svc, changed = await service(sqlite_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            h = "88.166.1001/C-1"
            first = await svc.create(h, (URL,), ALICE)
            assert (first.ok, first.changed, first.handle, first.replaced) == (True, True, h, False)
            assert first.message == ""
            refused = await svc.create(h, (URL,), ALICE)
            assert (refused.ok, refused.changed) == (False, False)
            assert refused.code == RC.HANDLE_ALREADY_EXISTS and "already exists" in refused.message
            again = await svc.create(h, (URL,), ALICE, overwrite=True)
            assert (again.changed, again.replaced) == (True, True)
            changed.clear()
            gone = await svc.remove_values(h, (9,), ALICE)
            assert not gone.changed and gone.message == "no value at index 9" and changed == []
            outsider = await svc.delete(h, Identity("0.NA/88.166.1002", 300))
            assert outsider.code == RC.INSUFFICIENT_PERMISSIONS and not outsider.changed
            deleted = await svc.delete(h, ALICE)
            assert deleted.ok and deleted.changed and changed == [h]
            homed = await svc.list_homed(ALICE)  # not a server administrator
            assert homed.code == RC.INSUFFICIENT_PERMISSIONS and homed.handles == ()
            assert "not a server administrator" in homed.message
        finally:
            await store.close()

    run(go)


def test_secrets_are_sealed_and_never_public(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc, _ = await service(sqlite_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            key = HandleValue(300, "HS_SECKEY", b"hunter2", permissions=0x0F)
            assert (await svc.create("88.166.1001/k", (key,), ALICE)).code == RC.SUCCESS
            (stored,) = await values(store, "88.166.1001/k") or ()
            assert b"hunter2" not in stored.data and not stored.public_read
            assert await svc.key_for(Identity("88.166.1001/k", 300), "HS_SECKEY") == b"hunter2"
            db = Path(sqlite_url[len("sqlite:///") :]).read_bytes()
            assert b"hunter2" not in db
        finally:
            await store.close()

    run(go)


def test_enterprises_write_only_under_their_prefix(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc, _ = await service(sqlite_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            assert (await svc.create("88.166.1001/mine", (URL,), ALICE)).code == RC.SUCCESS
            assert (await svc.create("88.166.1002/theirs", (URL,), ALICE)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )
            # derived prefixes need ADD_DERIVED_PREFIX on the parent prefix handle
            assert (await svc.create("0.NA/88.166.1003", (URL,), ALICE)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )
            assert (await svc.home("0.NA/88.200", ALICE)).code == RC.INSUFFICIENT_PERMISSIONS
        finally:
            await store.close()

    run(go)


def test_server_admins_home_and_unhome(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        root = Identity("0.NA/88.166", 300)
        store, svc, _ = await service(sqlite_url, tmp_path, server_admins=[root])
        try:
            assert (await svc.home("0.NA/88.200", root)).code == RC.SUCCESS
            assert svc.authority.serves("88.200.1/x")
            listing = await svc.list_homed(root)
            assert listing.code == RC.SUCCESS and "0.NA/88.200" in listing.handles
            assert (await svc.unhome("0.NA/88.200", root)).code == RC.SUCCESS
            assert not svc.authority.serves("88.200.1/x")
            assert (await svc.unhome("0.NA/88.200", root)).code == RC.HANDLE_NOT_FOUND
        finally:
            await store.close()

    run(go)


def test_batches_give_a_result_per_record_and_are_idempotent(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        store, svc, changed = await service(store_url, tmp_path)
        try:
            await set_prefix_admin(svc, AP.ADD_HANDLE)
            changed.clear()
            items = [
                (f"88.166.1001/B-{i}", (HandleValue(1, "URL", b"%d" % i),)) for i in range(1500)
            ]
            items[10] = ("88.166.1001/", (URL,))  # bad handle
            items[20] = ("99.1/x", (URL,))  # not homed
            items[30] = ("88.166.1001/B-31", (HandleValue(0, "URL", b""),))  # bad value
            items[40] = ("88.166.1002/B-40", (URL,))  # another enterprise's prefix
            items[50] = ("88.166.1001/B-0", (URL,))  # twice in this batch
            results = await svc.batch_create(items, ALICE)
            codes = {i: r.code for i, r in enumerate(results)}
            assert len(results) == 1500
            assert codes[10] == RC.INVALID_HANDLE and codes[20] == 301
            assert codes[30] == RC.INVALID_VALUE and codes[50] == RC.HANDLE_ALREADY_EXISTS
            assert codes[40] == RC.INSUFFICIENT_PERMISSIONS
            ok = [i for i, rc in codes.items() if rc == RC.SUCCESS]
            assert len(ok) == 1495 and len(changed) == 1495
            assert await store.count_handles() == 1496  # + the prefix handle
            # a retry of the same batch: every good record succeeds again, nothing is written
            changed.clear()
            again = await svc.batch_create(items, ALICE)
            assert [r.code for r in again] == [r.code for r in results]
            assert changed == []
            # the same handle with other values conflicts
            (res,) = await svc.batch_create([("88.166.1001/B-1", (URL,))], ALICE)
            assert res.code == RC.HANDLE_ALREADY_EXISTS and "other values" in res.message
            # over 2000 a call is refused whole
            with pytest.raises(Exception, match="at most 2000"):
                await svc.batch_create([("88.166.1001/x", (URL,))] * 2001, ALICE)
            audit = await store.audit_for("88.166.1001/B-2")
            # the retry wrote nothing, so it left no audit row either
            assert [e.detail for e in audit] == ["created"]
        finally:
            await store.close()

    run(go)


def test_templates_validate_writes(store_url: str, tmp_path: Path) -> None:
    from tests.unit.test_templates import DOC

    async def go() -> None:
        store, svc, _ = await service(store_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            assert (await svc.put_template(DOC, ALICE)).code == RC.SUCCESS
            assert (await svc.put_template(DOC, ALICE)).code == RC.SUCCESS  # same again: fine
            changed = {**DOC, "description": "other"}
            assert (await svc.put_template(changed, ALICE)).code == RC.VALUE_ALREADY_EXISTS
            v2_missing = {**DOC, "version": "v2", "items": DOC["items"][:1]}
            r = await svc.put_template(v2_missing, ALICE)
            assert r.code == RC.INVALID_VALUE and "never deleted" in r.message
            outsider = Identity("0.NA/88.166.1002", 300)
            assert (await svc.put_template({**DOC, "version": "v9"}, outsider)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )

            tpl = HandleValue(1001, "TEMPLATE", b"v1")
            good = (URL, tpl, HandleValue(2001, "productName", b"HV-200"))
            assert (await svc.create("88.166.1001/T-1", good, ALICE)).code == RC.SUCCESS
            r = await svc.create("88.166.1001/T-2", (URL, tpl), ALICE)
            assert r.code == RC.INVALID_VALUE and "productName (index 2001): required" in r.message
            assert await values(store, "88.166.1001/T-2") is None
            r = await svc.modify_values(
                "88.166.1001/T-1", (HandleValue(2001, "productName", b"H"),), ALICE
            )
            assert r.code == RC.INVALID_VALUE
            assert (await svc.remove_values("88.166.1001/T-1", (2001,), ALICE)).code == (
                RC.INVALID_VALUE
            )
            r = await svc.create("88.166.1001/T-3", (HandleValue(1001, "TEMPLATE", b"v7"),), ALICE)
            assert r.code == RC.INVALID_VALUE and "does not exist" in r.message
            results = await svc.batch_create(
                [("88.166.1001/T-4", good), ("88.166.1001/T-5", (tpl,))], ALICE
            )
            assert [r.code for r in results] == [RC.SUCCESS, RC.INVALID_VALUE]
            # a derived prefix inherits its parent's templates
            assert (await svc.create("88.166.1001.7/T-6", good, ALICE)).code == RC.SUCCESS
        finally:
            await store.close()

    run(go)


def test_authorized_read_needs_its_bit(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc, _ = await service(sqlite_url, tmp_path)
        try:
            await set_prefix_admin(svc, 0x0FFF & ~AP.AUTHORIZED_READ)
            from idnode.resolver.codec import encode_values

            vals = encode_values([URL])
            assert not await svc.may_read_restricted("88.166.1001/x", vals, ALICE)
            await set_prefix_admin(svc, AP.AUTHORIZED_READ)
            assert await svc.may_read_restricted("88.166.1001/x", vals, ALICE)
            # the handle's own HS_ADMIN decides when it has one
            own = encode_values([URL, admin_value(0, ALICE, 100)])
            assert not await svc.may_read_restricted("88.166.1001/x", own, ALICE)
        finally:
            await store.close()

    run(go)


def test_registration_quotas(store_url: str, tmp_path: Path) -> None:
    from idnode.registry.quotas import Quotas

    async def go() -> None:
        quotas = Quotas(default=0, overrides={"88.166.1001": 3})
        store, svc, _ = await service(store_url, tmp_path, quotas=quotas)
        try:
            await set_prefix_admin(svc, 0x0FFF)
            assert (await svc.create("88.166.1001/Q-1", (URL,), ALICE)).code == RC.SUCCESS
            results = await svc.batch_create(
                [(f"88.166.1001/Q-{i}", (URL,)) for i in range(2, 5)], ALICE
            )
            assert [r.code for r in results] == [RC.SUCCESS, RC.SUCCESS, RC.REGISTER_COUNT_LIMIT]
            r = await svc.create("88.166.1001/Q-9", (URL,), ALICE)
            assert r.code == RC.REGISTER_COUNT_LIMIT and "quota" in r.message
            # other prefixes have no limit; changing an existing handle is not a registration
            assert (await svc.create("88.166.1002/Q-1", (URL,), ALICE)).code != (
                RC.REGISTER_COUNT_LIMIT
            )
            assert (await svc.create("88.166.1001/Q-1", (URL,), ALICE, overwrite=True)).code == (
                RC.SUCCESS
            )
            assert await store.count_prefix("88.166.1001") == 3
        finally:
            await store.close()

    run(go)


def test_hs_vlist_admin_groups(sqlite_url: str, tmp_path: Path) -> None:
    from idnode.resolver.codec.values import ValueReference
    from idnode.resolver.codec.vlist import encode_vlist

    async def go() -> None:
        store, svc, _ = await service(sqlite_url, tmp_path)
        try:
            bob = Identity("0.NA/88.166.1001.staff", 300)
            # the prefix admin is a group: 200:0.NA/88.166.1001 lists members (a group of groups)
            group = HandleValue(
                200, "HS_VLIST", encode_vlist([ValueReference("0.NA/88.166.1001", 201)])
            )
            inner = HandleValue(201, "HS_VLIST", encode_vlist([ValueReference(bob.handle, 300)]))
            group_admin = HandleValue(
                100, "HS_ADMIN", encode_admin(AdminRecord(AP.ADD_HANDLE, "0.NA/88.166.1001", 200))
            )
            svc.server_admins.add(("0.NA/88.166", 300))
            assert (
                await svc.create(
                    "0.NA/88.166.1001", (group_admin, group, inner), Identity("0.NA/88.166", 300)
                )
            ).code == RC.SUCCESS
            svc.server_admins.discard(("0.NA/88.166", 300))
            assert (await svc.create("88.166.1001/G-1", (URL,), bob)).code == RC.SUCCESS
            stranger = Identity("0.NA/88.166.1001.staff", 301)
            assert (await svc.create("88.166.1001/G-2", (URL,), stranger)).code == (
                RC.INSUFFICIENT_PERMISSIONS
            )
            # membership grants only the group admin's bits
            assert (await svc.delete("88.166.1001/G-1", bob)).code == RC.INSUFFICIENT_PERMISSIONS
        finally:
            await store.close()

    run(go)
