"""Creating with overwrite and minting, as the reference's HandleServer.doCreateHandle and
HandleSuffixMinter do it, against real stores."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from pathlib import Path

import pytest

from idnode.registry.auth import Identity
from idnode.registry.permissions import replace_permissions
from idnode.registry.service import RegistryService
from idnode.registry.store import Store
from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    CreateHandleResponse,
    HandleValue,
    ResponseCode,
    decode_values,
    encode_admin,
)
from idnode.resolver.handle_admin import written
from tests.integration.sealed_registry import open_service

AP = AdminPermission
RC = ResponseCode
ALICE = Identity("0.NA/88.166", 300)  # the prefix admin: every permission
BOB = Identity("88.166/BOB", 300)
URL = HandleValue(1, "URL", b"https://example.cn/a")
EMAIL = HandleValue(2, "EMAIL", b"qa@example.cn")
UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def admin(who: Identity, perms: int) -> HandleValue:
    return HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(perms, who.handle, who.index)))


async def service(url: str, tmp: Path) -> tuple[Store, RegistryService]:
    store, svc = await open_service(url, tmp, [ALICE])
    assert (await svc.create("0.NA/88.166", (admin(ALICE, 0x0FFF),), ALICE)).code == RC.SUCCESS
    svc.server_admins.clear()
    return store, svc


async def values(store: Store, handle: str) -> dict[int, HandleValue]:
    raw = (await store.get_many([store.key(handle)]))[store.key(handle)]
    return {v.index: v for v in decode_values(raw)}


def test_create_reports_whether_it_replaced(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        try:
            h = "88.166/R-1"
            first = await svc.create(h, (URL,), ALICE, overwrite=True)
            assert (first.code, first.handle, first.replaced) == (RC.SUCCESS, h, False)
            t0 = (await values(store, h))[1].timestamp
            time.sleep(1.1)
            again = await svc.create(h, (URL, EMAIL), ALICE, overwrite=True)
            assert (again.code, again.replaced) == (RC.SUCCESS, True)
            now = await values(store, h)
            assert now[1].timestamp == t0  # unchanged values keep their timestamp
            assert now[2].timestamp > t0
            refused = await svc.create(h, (URL,), ALICE)
            assert (refused.code, refused.replaced) == (RC.HANDLE_ALREADY_EXISTS, False)
        finally:
            await store.close()

    asyncio.run(go())


def test_replacing_needs_the_handles_own_admins(sqlite_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(sqlite_url, tmp_path)
        try:
            h = "88.166/OWNED"
            own = admin(BOB, AP.MODIFY_VALUE)
            assert (await svc.create(h, (own, URL), ALICE)).code == RC.SUCCESS
            changed = HandleValue(1, "URL", b"https://example.cn/b")
            # Bob may modify values: replacing the URL is that, and nothing more
            assert (await svc.create(h, (own, changed), BOB, overwrite=True)).code == RC.SUCCESS
            # adding a value needs ADD_VALUE, which Bob's record lacks
            r = await svc.create(h, (own, changed, EMAIL), BOB, overwrite=True)
            assert r.code == RC.INSUFFICIENT_PERMISSIONS, r
            # the prefix admin is not this handle's admin, so cannot replace it
            r = await svc.create(h, (URL,), ALICE, overwrite=True)
            assert r.code == RC.INSUFFICIENT_PERMISSIONS
            assert (await values(store, h))[1].data == b"https://example.cn/b"
        finally:
            await store.close()

    asyncio.run(go())


def test_replace_permissions_value_by_value() -> None:
    old_admin = admin(ALICE, 0x0FFF)
    assert replace_permissions((URL,), (URL,)) == 0
    assert replace_permissions((URL,), ()) == AP.REMOVE_VALUE
    assert replace_permissions((), (URL,)) == AP.ADD_VALUE
    assert replace_permissions((), (old_admin,)) == AP.ADD_ADMIN
    assert replace_permissions((old_admin,), (admin(BOB, 1),)) == AP.MODIFY_ADMIN
    as_value = HandleValue(100, "URL", b"x")
    assert replace_permissions((old_admin,), (as_value,)) == AP.REMOVE_ADMIN | AP.MODIFY_VALUE
    assert replace_permissions((as_value,), (old_admin,)) == AP.MODIFY_VALUE | AP.ADD_ADMIN
    public = HandleValue(1, "URL", b"x", permissions=0x0F)
    assert replace_permissions((public,), (URL,)) == 0  # anyone may write it


@pytest.mark.parametrize(
    ("stem", "shape"),
    [("88.166/", "88.166/"), ("88.166/DOC-", "88.166/DOC-"), ("88.166", "88.166/")],
)
def test_mint_keeps_the_stem_and_retries_a_collision(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stem: str, shape: str
) -> None:
    async def go() -> None:
        store, svc = await service(sqlite_url, tmp_path)
        try:
            c = await svc.create(stem, (URL,), ALICE, mint=True, overwrite=True)
            assert c.code == RC.SUCCESS and not c.replaced
            assert re.fullmatch(re.escape(shape) + UUID4, c.handle), c.handle
            # the Handle door answers a mint with the handle minted
            rc, body = written(c, minted=True)
            assert rc == RC.SUCCESS and body == CreateHandleResponse(c.handle)
            taken = uuid.UUID(c.handle[-36:])
            fresh = uuid.uuid4()
            queue = [taken, fresh]
            monkeypatch.setattr("idnode.registry.writes.uuid.uuid4", lambda: queue.pop(0))
            again = await svc.create(stem, (EMAIL,), ALICE, mint=True, overwrite=True)
            assert again.code == RC.SUCCESS and again.handle == shape + str(fresh)
            # the collision left the first handle as it was; the new one holds the email
            kept = await values(store, c.handle)
            assert set(kept) == {1} and kept[1].data == URL.data
            minted = await values(store, again.handle)
            assert minted[2].data == EMAIL.data and 1 not in minted
        finally:
            await store.close()

    asyncio.run(go())
