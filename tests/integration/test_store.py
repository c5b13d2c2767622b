"""Both registry backends, against real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import asyncio

from registry.store import HandleRecord, open_store
from resolver.codec import HandleValue, decode_values, encode_values


def vals(*data: bytes) -> bytes:
    return encode_values([HandleValue(i + 1, "URL", d) for i, d in enumerate(data)])


def test_put_and_get_many(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            await s.home_prefix("88.166", "node")
            n = await s.put_many(
                [HandleRecord(f"88.166.1/Item-{i}", vals(b"%d" % i)) for i in range(1200)]
            )
            assert n == 1200
            keys = [s.key(f"88.166.1/item-{i}") for i in range(0, 1200, 7)] + ["88.166.1/NOPE"]
            got = await s.get_many(keys)
            assert len(got) == len(keys) - 1
            assert decode_values(got[s.key("88.166.1/item-7")])[0].data == b"7"
            assert await s.count_handles() == 1200
            assert await s.homed_prefixes() == ["88.166"]
        finally:
            await s.close()

    asyncio.run(go())


def test_replace_keeps_one_row_and_the_last_record_of_a_batch_wins(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            await s.put_many([HandleRecord("88.1/a", vals(b"old"))])
            await s.put_many(
                [HandleRecord("88.1/A", vals(b"first")), HandleRecord("88.1/a", vals(b"second"))]
            )
            got = await s.get_many([s.key("88.1/a")])
            assert decode_values(got["88.1/A"])[0].data == b"second"
            assert await s.count_handles() == 1
        finally:
            await s.close()

    asyncio.run(go())


def test_case_sensitive_store_keeps_cases_apart(sqlite_url: str) -> None:
    async def go() -> None:
        s = open_store(sqlite_url, case_sensitive=True)
        await s.open()
        try:
            await s.put_many(
                [HandleRecord("88.1/a", vals(b"lower")), HandleRecord("88.1/A", vals(b"upper"))]
            )
            assert await s.count_handles() == 2
        finally:
            await s.close()

    asyncio.run(go())


def test_a_missing_schema_says_run_init(tmp_path: object) -> None:
    async def go() -> None:
        s = open_store(f"sqlite:///{tmp_path}/empty.db")
        try:
            await s.open()
        except Exception as exc:
            assert "idnode init" in str(exc)
        else:
            raise AssertionError("opened a registry without a schema")

    asyncio.run(go())
