"""The console's listing of a prefix by key range (store.list_handles with ``after``),
on both registry backends and on a hash-partitioned PostgreSQL table: pages in key
order that neither overlap nor skip, and never leave the prefix."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.admin_tasks import open_registry
from idnode.registry.store import HandleRecord, Store, open_store
from idnode.resolver.codec import HandleValue, encode_values
from tests.e2e.node_process import init_registry

PAGE = 7


def _record(handle: str) -> HandleRecord:
    return HandleRecord(handle, encode_values([HandleValue(1, "URL", handle.encode())]))


async def _pages(store: Store, prefix: str) -> list[list[str]]:
    pages: list[list[str]] = []
    after = ""
    while True:
        page = await store.list_handles(prefix, PAGE, after=after)
        if not page:
            return pages
        pages.append(page)
        after = page[-1]


async def _check(store: Store) -> None:
    names = [f"88.166/K-{i:02d}" for i in range(30)]
    # neighbours on either side of the prefix's key range, and a derived prefix
    others = ["88.165/K-00", "88.1660/K-00", "88.166.1/K-00", "88.167/K-00"]
    await store.put_many([_record(h) for h in names + others])
    pages = await _pages(store, "88.166")
    assert [len(p) for p in pages] == [7, 7, 7, 7, 2]
    assert [h for p in pages for h in p] == sorted(names)  # no overlap, no gap, in order
    # "after" is compared as a key: a handle typed in another case finds the same place
    assert await store.list_handles("88.166", 2, after="88.166/k-27") == names[28:]
    assert await store.list_handles("88.166", 5, after="88.166/K-29") == []


def test_keyset_pages_on_both_backends(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            await _check(s)
        finally:
            await s.close()

    asyncio.run(go())


@pytest.fixture
def partitioned(pg_server: tuple[str, str], tmp_path: Path) -> Iterator[str]:
    name = f"idnode_keyset_{secrets.token_hex(4)}"
    url = asyncio.run(create_database(pg_server[0], name))
    init_registry(tmp_path, "k", "--partitions", "4", database_url=url)
    yield url
    asyncio.run(drop_database(pg_server[0], name))


def test_keyset_pages_on_a_partitioned_table(partitioned: str) -> None:
    async def go() -> None:
        async with open_registry(partitioned) as store:
            await _check(store)

    asyncio.run(go())
