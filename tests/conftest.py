"""Test-wide settings and the real services (Redis, PostgreSQL) the tests talk to."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Iterator

import asyncpg
import pytest
import redis
from hypothesis import settings

from idnode.loadtest.processes import clear_namespace
from idnode.loadtest.scratch_db import create_database, database_url, drop_database
from idnode.registry.migrate import upgrade
from tests.services import ServiceUnavailable, start_postgres, start_redis

# CI runs derandomized, so a failure can be reproduced from its log; locally the
# search is random and explores new ground on each run.
settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

RUN_ID = secrets.token_hex(4)  # every run has its own databases and key namespace


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    try:
        url, stop = start_redis()
    except (ServiceUnavailable, redis.RedisError, OSError) as exc:
        pytest.fail(f"Redis is required for the integration tests: {exc}", pytrace=False)
    yield url
    stop()


@pytest.fixture
def redis_namespace(redis_url: str) -> Iterator[str]:
    ns = f"idnode-test-{RUN_ID}-{secrets.token_hex(3)}"
    yield ns
    clear_namespace(redis_url, ns)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[tuple[str, str]]:
    """(server URL, name of a migrated template database)."""
    try:
        url, stop = start_postgres()
        template = f"idnode_test_{RUN_ID}_tmpl"
        asyncio.run(create_database(url, template))
    except (ServiceUnavailable, OSError, asyncpg.PostgresError, Exception) as exc:
        pytest.fail(f"PostgreSQL is required for the integration tests: {exc}", pytrace=False)
    upgrade(database_url(url, template))
    created: list[str] = []
    yield url, template
    for db in [*created, template]:
        asyncio.run(drop_database(url, db))
    stop()


@pytest.fixture
def pg_url(pg_server: tuple[str, str]) -> Iterator[str]:
    """A fresh, migrated database for one test (copied from the session's template)."""
    url, template = pg_server
    name = f"idnode_test_{RUN_ID}_{secrets.token_hex(4)}"
    yield asyncio.run(create_database(url, name, template=template))
    asyncio.run(drop_database(url, name))


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    url = f"sqlite:///{tmp_path}/registry.db"
    upgrade(url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Each registry backend in turn."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The load tests' longest smoke runs (marked ``bench``) are documented benchmark
    commands: they run with IDNODE_BENCH_TESTS=1 and are skipped, saying so, otherwise
    (they took a sixth of CI's time)."""
    if os.environ.get("IDNODE_BENCH_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="a benchmark's smoke run: IDNODE_BENCH_TESTS=1 runs it")
    for item in items:
        if "bench" in item.keywords:
            item.add_marker(skip)
