"""Scratch databases (idnode.loadtest.scratch_db) on the suite's real PostgreSQL server."""

from __future__ import annotations

import asyncio
import secrets

import asyncpg
import pytest

from idnode.loadtest.scratch_db import create_database, database_url, drop_database


async def exists(server: str, name: str) -> bool:
    c = await asyncpg.connect(server)
    try:
        return bool(await c.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name))
    finally:
        await c.close()


def test_create_copy_keep_and_drop(pg_server: tuple[str, str]) -> None:
    server, template = pg_server
    name = f"idnode_scratch_{secrets.token_hex(4)}"

    async def scenario() -> None:
        url = await create_database(server, name, template=template)
        assert url == database_url(server, name) and await exists(server, name)
        c = await asyncpg.connect(url)  # a copy of the migrated template: the schema is there
        try:
            assert await c.fetchval("SELECT count(*) FROM handles") == 0
            await c.execute("CREATE TABLE marker (x int)")
        finally:
            await c.close()
        # if_missing keeps what is there; without it, the name is taken
        assert await create_database(server, name, if_missing=True) == url
        c = await asyncpg.connect(url)
        try:
            assert await c.fetchval("SELECT to_regclass('marker') IS NOT NULL")
            # a connected client does not keep the database alive (FORCE)
            await drop_database(server, name)
        finally:
            await c.close()
        assert not await exists(server, name)
        await drop_database(server, name)  # dropping what is gone is no error
        with pytest.raises(asyncpg.DuplicateDatabaseError):
            await create_database(server, name)
            await create_database(server, name)
        await drop_database(server, name)

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["Upper", "a-b", "x; DROP DATABASE postgres", "", "1abc"])
def test_names_that_are_not_plain_identifiers_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a scratch database name"):
        asyncio.run(drop_database("postgresql://nobody@127.0.0.1:1/postgres", name))
