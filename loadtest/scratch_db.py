"""Scratch PostgreSQL databases: made on a server for a benchmark, a load test or a test,
and dropped after (WITH (FORCE): a node that is still connected does not keep it alive).
One copy, shared by the harness and the test suite. The server URL names a role that may
CREATE DATABASE; the names are the caller's own (letters, digits and underscores).
"""

from __future__ import annotations

import re

import asyncpg

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def database_url(server_url: str, name: str) -> str:
    """The URL of database ``name`` on the server ``server_url`` points at."""
    return f"{server_url.rpartition('/')[0]}/{name}"


def _quoted(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"not a scratch database name: {name!r}")
    return f'"{name}"'


async def _execute(server_url: str, sql: str, *args: object) -> object:
    c = await asyncpg.connect(server_url)
    try:
        return await c.fetchval(sql, *args) if args else await c.execute(sql)
    finally:
        await c.close()


async def create_database(
    server_url: str, name: str, *, template: str | None = None, if_missing: bool = False
) -> str:
    """Create ``name`` (a copy of ``template`` when given) and return its URL. With
    ``if_missing``, a database that exists already is kept as it is."""
    quoted = _quoted(name)
    if if_missing and await _execute(
        server_url, "SELECT 1 FROM pg_database WHERE datname = $1", name
    ):
        return database_url(server_url, name)
    sql = f"CREATE DATABASE {quoted}"
    if template is not None:
        sql += f" TEMPLATE {_quoted(template)}"
    await _execute(server_url, sql)
    return database_url(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` if it exists, disconnecting whoever is still connected."""
    await _execute(server_url, f"DROP DATABASE IF EXISTS {_quoted(name)} WITH (FORCE)")
