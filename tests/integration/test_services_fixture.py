"""The suite's own services are real servers that answer."""

from __future__ import annotations

import asyncio

import asyncpg
import redis


def test_redis_is_real(redis_url: str, redis_namespace: str) -> None:
    r = redis.Redis.from_url(redis_url)
    r.set(f"{redis_namespace}:probe", b"1", ex=10)
    assert r.get(f"{redis_namespace}:probe") == b"1"


def test_postgres_is_real_and_migrated(pg_url: str) -> None:
    async def tables() -> set[str]:
        c = await asyncpg.connect(pg_url)
        try:
            rows = await c.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        finally:
            await c.close()
        return {r[0] for r in rows}

    assert {"handles", "prefixes", "alembic_version"} <= asyncio.run(tables())
