"""The value index behind reverse lookup (--search-index) on SQLite and PostgreSQL: kept
in step by every write path (create, overwrite, value changes, delete, batch, import),
searched exactly, by trailing wildcard, by any type, with several terms, a limit and
pages (one hit a handle, before the page is cut); restricted to a prefix admin's
prefixes; refused when off, never built or dropped by another process; bounded (NUL in a
type, searches at once, SQLite's time bound); kept by CLI writers of a marked registry."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from idnode.registry import value_search
from idnode.registry.admin_tasks import open_registry
from idnode.registry.auth import Identity
from idnode.registry.names import PrefixAuthority
from idnode.registry.permissions import Permissions
from idnode.registry.postgres_store import PostgresStore
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import HandleRecord, Store, open_store
from idnode.registry.value_search import (
    SearchBusy,
    SearchRefused,
    SearchUnavailable,
    Term,
    ValueSearch,
    marked_on,
    switch_on,
)
from idnode.resolver.codec import (
    AdminPermission,
    AdminRecord,
    HandleValue,
    Permission,
    encode_admin,
    encode_values,
)

ROOT = Identity("0.NA/88.166", 300)
ALICE = Identity("0.NA/88.166.1001", 300)


def url(i: int, data: str, typ: str = "URL") -> HandleValue:
    return HandleValue(i, typ, data.encode())


async def service(db: str, tmp: Path, *, on: bool = True) -> tuple[Store, RegistryService]:
    store = open_store(db)
    await store.open()
    if on:
        switch_on(store)
    for p in ("88.166", "88.200"):
        await store.home_prefix(p)
    svc = RegistryService(
        store,
        PrefixAuthority(["88.166", "88.200"]),
        sealer=Sealer.from_file(tmp / "node.key", create=True),
        server_admins=[ROOT],
    )
    return store, svc


def run(coro: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(coro())


async def find(svc: RegistryService, q: str, who: Identity = ROOT, **kw: Any) -> list[str]:
    terms = [Term.parse(*t.split("=", 1)) for t in q.split("&")]
    hits = await svc.search.find(terms, who, **kw)
    assert hits is not None
    return [h.handle for h in hits]


def test_every_write_path_keeps_the_index(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        await svc.search.build()  # an empty registry: built at once
        assert (await svc.create("88.166/a", (url(1, "https://ex.cn/a"),), ROOT)).ok
        assert await find(svc, "URL=https://ex.cn/a") == ["88.166/a"]
        # Overwrite: the old value is gone from the index, the new one is there.
        assert (
            await svc.create("88.166/a", (url(1, "https://ex.cn/a2"),), ROOT, overwrite=True)
        ).ok
        assert await find(svc, "URL=https://ex.cn/a") == []
        assert await find(svc, "URL=https://ex.cn/a2") == ["88.166/a"]
        # Add, modify, remove values.
        assert (await svc.add_values("88.166/a", (url(2, "md5:1", "CHECKSUM"),), ROOT)).ok
        assert await find(svc, "CHECKSUM=md5:1") == ["88.166/a"]
        assert (await svc.modify_values("88.166/a", (url(2, "md5:2", "CHECKSUM"),), ROOT)).ok
        assert await find(svc, "CHECKSUM=md5:1") == []
        assert await find(svc, "checksum=md5:2") == ["88.166/a"]  # types in any case
        assert (await svc.remove_values("88.166/a", (2,), ROOT)).ok
        assert await find(svc, "CHECKSUM=md5:2") == []
        # A batch.
        items = [(f"88.166/b{i}", (url(1, f"https://ex.cn/b/{i}"),)) for i in range(5)]
        assert all(r.code == 1 for r in await svc.batch_create(items, ROOT))
        assert await find(svc, "URL=https://ex.cn/b/*") == [f"88.166/b{i}" for i in range(5)]
        # Import (put_many), then delete.
        await store.put_many([HandleRecord("88.166/c", encode_values((url(1, "ftp://c"),)))])
        assert await find(svc, "URL=ftp://c") == ["88.166/c"]
        assert (await svc.delete("88.166/b3", ROOT)).ok
        assert "88.166/b3" not in await find(svc, "URL=https://ex.cn/b/*")
        # A refused write changes nothing in the index.
        refused = await svc.create("88.166/c", (url(1, "ftp://other"),), ALICE, overwrite=True)
        assert not refused.ok
        assert await find(svc, "URL=ftp://other") == []
        await store.close()

    run(go)


def test_patterns_types_limits_and_what_is_never_indexed(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        await svc.search.build()
        secret = HandleValue(2, "HS_SECKEY", b"s3cret", permissions=int(Permission.ADMIN_READ))
        private = HandleValue(3, "EMAIL", b"a@ex.cn", permissions=int(Permission.ADMIN_READ))
        items = [
            ("88.166/x1", (url(1, "http://ex.org/x/1"), url(5, "v1", "VERSION"), secret, private)),
            ("88.166/x2", (url(1, "http://ex.org/x/2"), url(5, "v2", "VERSION"))),
            ("88.166/x3", (url(1, "http://ex.org/y/3"), url(5, "v1", "VERSION"))),
            ("88.166/x4", (url(1, "http://EX.org/x/4"),)),  # data is case-sensitive
            ("88.166/x5", (url(1, "http://ex.org/x_%/5"),)),  # LIKE's own wildcards
        ]
        assert all(r.code == 1 for r in await svc.batch_create(items, ROOT))
        assert await find(svc, "URL=http://ex.org/x/*") == ["88.166/x1", "88.166/x2"]
        assert await find(svc, "URL=http://ex.org/*/3") == ["88.166/x3"]
        assert await find(svc, "URL=http://ex.org/x_%/*") == ["88.166/x5"]
        assert await find(svc, "URL=http://ex.org/x_*") == ["88.166/x5"]
        assert await find(svc, "URL=http://ex.org/*&VERSION=v1") == ["88.166/x1", "88.166/x3"]
        assert await find(svc, "VERSION=*") == ["88.166/x1", "88.166/x3", "88.166/x2"]
        # Limit and pages, in (value, handle) order.
        assert await find(svc, "URL=http://ex.org/*", limit=2) == ["88.166/x1", "88.166/x2"]
        assert await find(svc, "URL=http://ex.org/*", limit=2, page=1) == [
            "88.166/x5",
            "88.166/x3",
        ]
        # Never searchable: HS_ types, values without public read.
        with pytest.raises(SearchRefused):
            Term.parse("HS_SECKEY", "s3cret")
        assert await find(svc, "EMAIL=a@ex.cn") == []
        # A leading wildcard with more after it would read every value: refused.
        with pytest.raises(SearchRefused, match="must begin with literal text"):
            Term.parse("URL", "*ex.org*")
        with pytest.raises(SearchRefused, match="limit"):
            await find(svc, "URL=http://*", limit=5000)
        await store.close()

    run(go)


def test_prefix_admins_search_their_prefixes_only(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        await svc.search.build()
        grant = AdminRecord(int(AdminPermission.LIST_HANDLES), ALICE.handle, ALICE.index)
        admin = HandleValue(100, "HS_ADMIN", encode_admin(grant))
        assert (await svc.create("0.NA/88.200", (admin,), ROOT)).ok
        for p in ("88.166", "88.200"):
            assert (await svc.create(f"{p}/same", (url(1, "http://same"),), ROOT)).ok
        assert await find(svc, "URL=http://same") == ["88.166/same", "88.200/same"]
        assert await find(svc, "URL=http://same", ALICE) == ["88.200/same"]
        nobody = await svc.search.find([Term.parse("URL", "*")], Identity("0.NA/9.9", 300))
        assert nobody is None  # administers nothing here: the door says 403
        await store.close()

    run(go)


def test_backfill_then_off_and_not_built(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        # Handles written while the index was off are found after a build.
        store, svc = await service(store_url, tmp_path, on=False)
        items = [(f"88.166/old{i}", (url(1, f"http://old/{i:04d}"),)) for i in range(2500)]
        assert all(r.code == 1 for r in await svc.batch_create(items[:1000], ROOT))
        assert all(r.code == 1 for r in await svc.batch_create(items[1000:2000], ROOT))
        assert all(r.code == 1 for r in await svc.batch_create(items[2000:], ROOT))
        with pytest.raises(SearchUnavailable) as off:
            await find(svc, "URL=http://old/*")
        assert off.value.off and "--search-index" in str(off.value)
        switch_on(store)
        with pytest.raises(SearchUnavailable) as unbuilt:
            await find(svc, "URL=http://old/*")
        assert not unbuilt.value.off and "search-index build" in str(unbuilt.value)
        seen: list[tuple[int, int]] = []
        assert await svc.search.build(lambda d, t: seen.append((d, t))) == 2500
        assert seen[-1] == (2500, 2500) and len(seen) == 2  # batches of 2000
        assert await find(svc, "URL=http://old/0042") == ["88.166/old42"]
        assert len(await find(svc, "URL=http://old/*", limit=1000, page=2)) == 500
        # Dropped: not trusted until built again.
        await svc.search.drop()
        with pytest.raises(SearchUnavailable):
            await find(svc, "URL=http://old/0042")
        await store.close()

    run(go)


def test_nul_in_a_type_is_not_indexed_and_breaks_no_write_or_build(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        # Stored before the index was on: the build must get past it.
        store, svc = await service(store_url, tmp_path, on=False)
        odd = (url(1, "http://nul/old"), url(2, "x", "UR\x00L"))
        assert (await svc.create("88.166/nul-old", odd, ROOT)).ok
        switch_on(store)
        assert await svc.search.build() == 1
        # Written with the index on: the write succeeds, the NUL type is not indexed.
        new = (url(1, "http://nul/new"), url(2, "y", "UR\x00L"))
        assert (await svc.create("88.166/nul-new", new, ROOT)).ok
        assert await find(svc, "URL=http://nul/*") == ["88.166/nul-new", "88.166/nul-old"]
        await store.close()

    run(go)


def test_a_handle_matching_twice_is_one_hit_and_pages_are_full(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        await svc.search.build()
        items = [
            (f"88.166/d{i}", (url(1, f"http://d/{i}a"), url(2, f"http://d/{i}b"))) for i in range(5)
        ]
        assert all(r.code == 1 for r in await svc.batch_create(items, ROOT))
        pages = [await find(svc, "URL=http://d/*", limit=2, page=p) for p in range(3)]
        assert pages == [
            ["88.166/d0", "88.166/d1"],
            ["88.166/d2", "88.166/d3"],
            ["88.166/d4"],
        ]
        await store.close()

    run(go)


def test_a_drop_elsewhere_is_seen_and_cli_writers_keep_a_marked_index(
    store_url: str, tmp_path: Path
) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        assert not await marked_on(store)
        await svc.search.build()
        assert await marked_on(store)
        # `idnode import` opens the registry without --search-index: the marker
        # switches the index on, and its writes are found.
        async with open_registry(store_url) as cli_store:
            assert getattr(cli_store, "search_index", False)
            await cli_store.put_many(
                [HandleRecord("88.166/imported", encode_values((url(1, "ftp://imp"),)))]
            )
        svc.search.built_ttl = 0.0  # re-read the marker on every search
        assert await find(svc, "URL=ftp://imp") == ["88.166/imported"]
        # Dropped by `idnode search-index drop` (another ValueSearch, another process):
        # this one answers 503, not an empty 200.
        other = ValueSearch(store, PrefixAuthority(["88.166"]), Permissions(store))
        await other.drop()
        with pytest.raises(SearchUnavailable) as unbuilt:
            await find(svc, "URL=ftp://imp")
        assert not unbuilt.value.off
        assert not await marked_on(store)
        await store.close()

    run(go)


def test_searches_a_worker_runs_at_once_are_bounded(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The first search must still be waiting when the second comes: its own time bound
    # (5 s) could run out first on a loaded machine, and the wait below never end.
    monkeypatch.setattr(value_search, "TIMEOUT_MS", 600_000)

    async def go() -> None:
        store, svc = await service(pg_url, tmp_path)
        await svc.search.build()
        assert isinstance(store, PostgresStore)
        locker = await asyncpg.connect(pg_url)
        try:
            async with locker.transaction():
                await locker.execute("LOCK TABLE search_values IN ACCESS EXCLUSIVE MODE")
                first = asyncio.create_task(find(svc, "URL=http://a/*"))
                async with asyncio.timeout(60):  # the first search waits for the lock
                    # pg_stat_activity is read once per transaction and kept (a snapshot):
                    # inside the lock's transaction each poll must clear it, or a first
                    # poll made before the search started waiting is all it ever sees.
                    while not await locker.fetchval(
                        "SELECT count(*) FROM pg_stat_clear_snapshot(), pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND query LIKE '%search_values%'"
                        " AND datname = current_database()"
                    ):
                        if first.done():  # it did not wait: say why, do not spin
                            first.result()
                            pytest.fail("the first search ended without waiting for the lock")
                        await asyncio.sleep(0.02)
                with pytest.raises(SearchBusy, match="try again"):
                    await find(svc, "URL=http://b/*")  # the same administrator: at once
        finally:
            await locker.close()  # the lock goes with it, even when the test failed
        assert await first == []
        assert await find(svc, "URL=http://b/*") == []  # and served once the first ended
        await store.close()

    run(go)


def test_a_slow_sqlite_search_is_interrupted(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def go() -> None:
        store, svc = await service(sqlite_url, tmp_path)
        await svc.search.build()
        items = [(f"88.166/s{i}", (url(1, f"http://s/{i:04d}"),)) for i in range(300)]
        assert all(r.code == 1 for r in await svc.batch_create(items, ROOT))
        monkeypatch.setattr(value_search, "TIMEOUT_MS", 0)
        with pytest.raises(SearchRefused, match="took over"):
            await find(svc, "URL=http://s/*", limit=1000)
        monkeypatch.undo()
        assert len(await find(svc, "URL=http://s/*", limit=1000)) == 300
        await store.close()

    run(go)
