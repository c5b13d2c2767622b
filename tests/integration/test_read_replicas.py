"""PostgresStore with a read replica: a private primary and a streaming replica
(loadtest/pg_replica.py), real connections. Which server answered is told by the store's
read counts and, independently, by what it answers while the replica's replay is paused
(a key written on the primary alone is not on the replica)."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from idnode.loadtest.pg_replica import ReplicatedPostgres, start_replicated_postgres
from idnode.registry.migrate import upgrade
from idnode.registry.postgres_store import PostgresStore
from idnode.registry.replicas import ReplicaStatus, Requirements, lsn, lsn_text
from idnode.registry.store import HandleRecord, StoreError, open_store
from idnode.resolver.changefeed import ChangeLog
from idnode.resolver.codec import HandleValue, decode_values, encode_values
from idnode.resolver.core import Resolver
from idnode.resolver.l1 import Lifetimes
from idnode.resolver.settings import (
    ConfigError,
    add_setting_flags,
    load_settings,
    settings_from_args,
)
from idnode.resolver.stages.registry_lookup import RegistryStage

DEADLINE = 30.0  # seconds a condition may take to come true (never a measured time)


@pytest.fixture(scope="module")
def pg() -> Iterator[ReplicatedPostgres]:
    pg = start_replicated_postgres()
    try:
        upgrade(pg.primary_url)
        pg.wait_replayed()
        yield pg
    finally:
        pg.stop()


class Seen:
    """The store's observer: keys read by target, the replicas' last status."""

    def __init__(self) -> None:
        self.reads: dict[str, int] = {}
        self.status: list[ReplicaStatus] = []

    def __call__(self, status: list[ReplicaStatus], reads: dict[str, int]) -> None:
        self.status = status
        for target, n in reads.items():
            self.reads[target] = self.reads.get(target, 0) + n


async def opened(pg: ReplicatedPostgres, seen: Seen, max_lag: float = 30.0) -> PostgresStore:
    store = open_store(
        pg.primary_url, read_urls=[pg.replica_url], replica_max_lag=max_lag, replica_observer=seen
    )
    assert isinstance(store, PostgresStore)
    await store.open()
    return store


def url(data: bytes) -> bytes:
    return encode_values([HandleValue(1, "URL", data)])


def record(handle: str, value: bytes) -> HandleRecord:
    return HandleRecord(handle, value)


async def reads_after(store: PostgresStore, seen: Seen, keys: list[str]) -> dict[str, bytes]:
    """get_many, then the read counts flushed to the observer."""
    got = await store.get_many(keys)
    assert store.replicas is not None
    store.replicas.observe()
    return got


async def until_replica(store: PostgresStore, state: str) -> None:
    assert store.replicas is not None
    r = store.replicas.replicas[0]
    async with asyncio.timeout(DEADLINE):
        while True:
            await store.replicas.poll()
            if r.state == state:
                return
            await asyncio.sleep(0.1)


def test_positions_compare_as_integers() -> None:
    assert lsn("0/16B3748") < lsn("0/16B3750") < lsn("1/0") < lsn("A/0")
    assert lsn_text(lsn("16/B374D848")) == "16/B374D848"
    assert lsn("") == 0


def test_requirements_fold_into_the_floor_instead_of_being_dropped() -> None:
    req = Requirements(floor=10, cap=100)
    req.require(["old"], 5)  # before the floor: nothing to keep
    assert len(req) == 0 and req.needed("old") == 10
    for i in range(150):
        req.require([f"k{i}"], 100 + i)
    # Over the cap: the oldest were folded into the floor, none is needed less than before.
    assert len(req) <= 100
    assert req.floor > 10
    assert all(req.needed(f"k{i}") >= 100 + i for i in range(150))
    req.raise_floor(200)
    assert len(req) == 49 and req.needed("k149") == 249 and req.needed("k0") == 200


def test_lookups_go_to_the_replica(pg: ReplicatedPostgres) -> None:
    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen)
        try:
            await store.put_many([record(f"88.T/r{i}", b"v%d" % i) for i in range(5)])
            pg.wait_replayed()
            assert store.replicas is not None
            await store.replicas.poll()
            keys = [store.key(f"88.T/r{i}") for i in range(5)]
            got = await reads_after(store, seen, keys)
            assert got == {k: b"v%d" % i for i, k in enumerate(keys)}
            name = store.replicas.replicas[0].name
            assert seen.reads == {name: 5}
            assert seen.status[0].usable

            # Proof that the replica answered: a key written on the primary alone (replay
            # paused, its write not heard) is not there yet.
            pg.pause_replay()
            try:
                await store.put_many([record("88.T/unheard", b"x")])
                await store.replicas.poll()
                assert await store.get_many([store.key("88.T/unheard")]) == {}
            finally:
                pg.resume_replay()
        finally:
            await store.close()

    asyncio.run(go())


def test_a_heard_write_is_read_on_the_primary_until_replayed(pg: ReplicatedPostgres) -> None:
    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen)
        assert store.replicas is not None
        a, b = store.key("88.T/a"), store.key("88.T/b")
        try:
            await store.put_many([record("88.T/a", b"old"), record("88.T/b", b"b")])
            pg.wait_replayed()
            await store.replicas.poll()
            pg.pause_replay()
            try:
                await store.put_many([record("88.T/a", b"new")])
                position = await store.write_position()
                store.heard_write([a], position)
                await store.replicas.poll()
                seen.reads.clear()
                got = await reads_after(store, seen, [a, b])
                assert got == {a: b"new", b: b"b"}
                # a from the primary (the replica has not replayed its write), b not.
                assert seen.reads == {"primary": 1, store.replicas.replicas[0].name: 1}
            finally:
                pg.resume_replay()
            pg.wait_replayed(position)
            await store.replicas.poll()
            seen.reads.clear()
            assert await reads_after(store, seen, [a]) == {a: b"new"}
            assert seen.reads == {store.replicas.replicas[0].name: 1}
            # Every usable replica has replayed it: the requirement is gone.
            assert len(store.replicas.requirements) == 0
        finally:
            await store.close()

    asyncio.run(go())


def test_writes_before_the_node_started_are_never_read_older(pg: ReplicatedPostgres) -> None:
    """The floor: a node that heard no invalidation for a write made before it started
    still does not read that key from a replica that has not replayed it."""

    async def go() -> None:
        seen = Seen()
        pg.pause_replay()
        try:
            writer = await opened(pg, Seen())
            await writer.put_many([record("88.T/before", b"v2")])
            await writer.close()
            store = await opened(pg, seen)
            try:
                key = store.key("88.T/before")
                assert await reads_after(store, seen, [key]) == {key: b"v2"}
                assert seen.reads == {"primary": 1}
            finally:
                await store.close()
        finally:
            pg.resume_replay()

    asyncio.run(go())


def test_a_write_of_unknown_position_sends_every_lookup_to_the_primary(
    pg: ReplicatedPostgres,
) -> None:
    """An invalidation without a position (its writer could not read the primary's just
    after the commit): nothing is read on a replica until the primary's position is read
    again, and then not before a replica has replayed that far."""

    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen)
        assert store.replicas is not None
        name = store.replicas.replicas[0].name
        b = store.key("88.T/b")
        try:
            pg.wait_replayed()
            await store.replicas.poll()
            pg.pause_replay()
            try:
                await store.put_many([record("88.T/unknown", b"new")])
                store.heard_write([store.key("88.T/unknown")], "")
                seen.reads.clear()
                assert await reads_after(store, seen, [b]) == {b: b"b"}
                assert seen.reads == {"primary": 1}
                await store.replicas.poll()  # the floor is now past the paused replay
                seen.reads.clear()
                got = await reads_after(store, seen, [b, store.key("88.T/unknown")])
                assert got == {b: b"b", store.key("88.T/unknown"): b"new"}
                assert seen.reads == {"primary": 2}
            finally:
                pg.resume_replay()
            pg.wait_replayed()
            await store.replicas.poll()
            seen.reads.clear()
            assert await reads_after(store, seen, [b]) == {b: b"b"}
            assert seen.reads == {name: 1}
        finally:
            await store.close()

    asyncio.run(go())


def test_a_worker_not_caught_up_reads_the_primary(pg: ReplicatedPostgres) -> None:
    """A worker that lost its invalidation channel (its caches untrusted) may have missed
    a write and so the position its reads need: its registry reads go to the primary
    until it has caught up, and after that not to a replica that lacks what it missed."""

    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen)
        writer = await opened(pg, Seen())
        assert store.replicas is not None
        name = store.replicas.replicas[0].name
        core = Resolver(
            [RegistryStage(store, Lifetimes())],
            changes=ChangeLog(store),  # with Redis: untrusted until the channel listens
            write_position=store.write_position,
            heard_write=store.heard_write,
            hold_replicas=store.hold_replicas,
        )
        try:
            await writer.put_many([HandleRecord("88.T/missed", url(b"old"))])
            pg.wait_replayed()
            await store.replicas.poll()
            assert not core.trusted
            pg.pause_replay()
            try:
                # Written on another node: this worker, not listening, hears nothing.
                await writer.put_many([HandleRecord("88.T/missed", url(b"new"))])
                await store.replicas.poll()
                assert store.replicas.replicas[0].usable  # within max_lag: it would answer
                seen.reads.clear()
                got = await core.resolve("88.T/missed")
                assert got.values_wire is not None
                assert decode_values(got.values_wire)[0].data == b"new"
                store.replicas.observe()
                assert seen.reads == {"primary": 1}
                # Caught up: released, but the replica still lacks the write it missed.
                core.listener_subscribed()
                assert await core.in_step(DEADLINE)
                await store.replicas.poll()
                seen.reads.clear()
                key = store.key("88.T/missed")
                assert await reads_after(store, seen, [key]) != {}
                assert seen.reads == {"primary": 1}
            finally:
                pg.resume_replay()
            pg.wait_replayed()
            await store.replicas.poll()
            seen.reads.clear()
            await reads_after(store, seen, [store.key("88.T/missed")])
            assert seen.reads == {name: 1}  # replayed: the replica answers again
        finally:
            await core.drain()
            await writer.close()
            await store.close()

    asyncio.run(go())


def test_a_poll_does_not_clear_an_unknown_write_made_during_it(pg: ReplicatedPostgres) -> None:
    """A write whose position is unknown, made while a poll reads the primary's position:
    that reading may precede the write, so the poll must not end the primary-only reads."""

    async def go() -> None:
        store = await opened(pg, Seen())
        assert store.replicas is not None
        replicas = store.replicas
        try:
            pg.wait_replayed()
            await replicas.poll()
            read = replicas._primary_position

            async def primary_then_a_write() -> int:
                at = await read()
                replicas.unknown_write()  # committed after the reading above
                return at

            replicas._primary_position = primary_then_a_write
            await replicas.poll()
            replicas._primary_position = read
            assert replicas.plan(["k"]) == [(None, ["k"])]
            await replicas.poll()  # a poll that started after it ends it
            assert replicas.plan(["k"])[0][0] is not None
        finally:
            await store.close()

    asyncio.run(go())


def test_a_lagging_replica_is_skipped(
    pg: ReplicatedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen, max_lag=0.5)
        assert store.replicas is not None
        try:
            pg.wait_replayed()
            await until_replica(store, "usable")
            pg.pause_replay()
            try:
                # The primary moves on; the paused replica falls behind the bound.
                await store.put_many([record("88.T/lag", b"1")])
                await until_replica(store, "lagging")
                assert not seen.status[0].usable and seen.status[0].lag_bytes > 0
                seen.reads.clear()
                key = store.key("88.T/b")
                assert await reads_after(store, seen, [key]) == {key: b"b"}
                assert seen.reads == {"primary": 1}
            finally:
                pg.resume_replay()
            pg.wait_replayed()
            await until_replica(store, "usable")
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="idnode.registry.replicas"):
        asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records]
    # Logged when it changes (a loaded machine may also see a lag before the pause).
    assert any("is skipped: lagging" in m for m in lines), lines
    assert any("is used" in m and "was lagging" in m for m in lines), lines


def test_a_stopped_replica_is_skipped_then_used_again(
    pg: ReplicatedPostgres, caplog: pytest.LogCaptureFixture
) -> None:
    async def go() -> None:
        seen = Seen()
        store = await opened(pg, seen)
        assert store.replicas is not None
        name = store.replicas.replicas[0].name
        key = store.key("88.T/b")
        try:
            pg.wait_replayed()
            await until_replica(store, "usable")
            pg.stop_replica()
            # The next lookups answer all the same (from the primary) ...
            seen.reads.clear()
            for _ in range(3):
                assert await reads_after(store, seen, [key]) == {key: b"b"}
            assert seen.reads == {"primary": 3}
            await until_replica(store, "down")
            assert [(r.name, r.usable) for r in seen.status] == [(name, False)]
            pg.start_replica()
            pg.wait_replayed()
            await until_replica(store, "usable")
            seen.reads.clear()
            assert await reads_after(store, seen, [key]) == {key: b"b"}
            assert seen.reads == {name: 1}
        finally:
            await store.close()

    with caplog.at_level(logging.INFO, logger="idnode.registry.replicas"):
        asyncio.run(go())
    lines = [r.getMessage() for r in caplog.records]
    # One line when it went (not one per lookup or poll), one when it came back.
    assert sum("is skipped: down" in m for m in lines) == 1, lines
    assert sum("is used" in m and "was down" in m for m in lines) == 1, lines


def test_a_standby_as_database_url_is_refused(pg: ReplicatedPostgres) -> None:
    async def go() -> None:
        store = open_store(pg.replica_url)
        with pytest.raises(StoreError, match="database_url is a read replica") as caught:
            await store.open()
        assert "--database-read-url" in str(caught.value)

    asyncio.run(go())


def test_read_replicas_need_postgresql() -> None:
    with pytest.raises(StoreError, match="PostgreSQL"):
        open_store("sqlite:///x.db", read_urls=["postgresql://r/db"])


def test_database_read_url_is_a_repeatable_setting(tmp_path: Path) -> None:
    primary, r1, r2 = "postgresql://p/db", "postgresql://u@r1/db", "postgresql://u@r2/db"
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    args = parser.parse_args(
        ["--database-url", primary, "--database-read-url", r1, "--database-read-url", r2]
    )
    assert settings_from_args(args).database_read_url == (r1, r2)
    env = {"IDNODE_DATABASE_URL": primary, "IDNODE_DATABASE_READ_URL": f"{r1}, {r2}"}
    assert load_settings(env=env).database_read_url == (r1, r2)
    for toml in (f'database_read_url = ["{r1}", "{r2}"]', f'database_read_url = "{r1},{r2}"'):
        path = tmp_path / "idnode.toml"
        path.write_text(f'database_url = "{primary}"\n{toml}\n')
        assert load_settings(env={}, config_file=path).database_read_url == (r1, r2)
    assert load_settings(env={}).database_read_url == ()
    with pytest.raises(ConfigError, match="needs a PostgreSQL database_url"):
        load_settings(env={"IDNODE_DATABASE_READ_URL": r1})  # SQLite by default
    with pytest.raises(ConfigError, match="replica_max_lag"):
        load_settings(env={"IDNODE_REPLICA_MAX_LAG": "0"})
