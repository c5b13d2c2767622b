"""Both registry backends, against real SQLite files and a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from idnode.registry.postgres_store import PostgresStore
from idnode.registry.sqlite_store import SqliteStore
from idnode.registry.store import HandleRecord, Outcome, Refusal, Store, open_store, sha256_hex
from idnode.resolver.codec import HandleValue, decode_values, encode_values
from idnode.resolver.codec.codes import ResponseCode


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
            # one key (PostgreSQL asks it with a statement of its own): found, absent
            one = s.key("88.166.1/item-3")
            assert list(await s.get_many([one])) == [one]
            assert decode_values((await s.get_many([one]))[one])[0].data == b"3"
            assert await s.get_many([s.key("88.166.1/nope")]) == {}
            assert await s.get_many([]) == {}
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


def test_a_prefix_lists_and_counts_exactly_its_own_handles(store_url: str) -> None:
    """Listing walks the primary-key range [P/, P0) (migration 0007): a derived prefix
    ("88.166.1001.5", "." sorts before "/") and a longer one ("88.166.10010") are not
    the prefix's identifiers, and the listing comes back in key order."""

    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            names = [
                "88.166.1001/B",
                "88.166.1001/A",
                "88.166.1001.5/C",
                "88.166.10010/D",
                "88.166.100/E",
                "88.166.1001/0",
            ]
            await s.put_many([HandleRecord(n, vals(b"x")) for n in names])
            assert await s.list_handles("88.166.1001") == [
                "88.166.1001/0",
                "88.166.1001/A",
                "88.166.1001/B",
            ]
            assert await s.count_prefix("88.166.1001") == 3
            assert await s.list_handles("88.166.1001.5") == ["88.166.1001.5/C"]
            assert await s.count_prefix("88.166.10010") == 1
        finally:
            await s.close()

    asyncio.run(go())


def test_postgres_handle_keys_compare_byte_for_byte(pg_url: str) -> None:
    """Migration 0007: the key column uses the "C" collation, whatever the database's
    locale, so the primary key's order is the byte order key_range relies on."""
    import asyncpg

    async def go() -> None:
        c = await asyncpg.connect(pg_url)
        try:
            collation = await c.fetchval(
                "SELECT collation_name FROM information_schema.columns"
                " WHERE table_name = 'handles' AND column_name = 'handle'"
            )
            index = await c.fetchval(
                "SELECT count(*) FROM pg_indexes WHERE indexname = 'handles_prefix_handle'"
            )
        finally:
            await c.close()
        assert collation == "C" and index == 0

    asyncio.run(go())


def test_a_connection_left_in_a_transaction_comes_back_clean(pg_url: str) -> None:
    """The pool runs no reset query on release (the store keeps no session state); a
    transaction left open is still rolled back before the connection is reused."""
    from idnode.registry.postgres_store import PostgresStore

    async def go() -> None:
        s = PostgresStore(pg_url, pool_size=1)
        await s.open()
        try:
            async with s.pool.acquire() as c:
                await c.execute("BEGIN")
                await c.execute("INSERT INTO prefixes VALUES ('9.9', '9.9', 'x', 'homed', 0)")
            async with s.pool.acquire() as c:
                assert not c.is_in_transaction()
                assert await c.fetchval("SELECT count(*) FROM prefixes WHERE prefix = '9.9'") == 0
        finally:
            await s.close()

    asyncio.run(go())


class Boom(Exception):
    pass


async def _fail_inside_a_transaction(s: Store) -> None:
    """Write a row through the backend's transaction helper, then raise."""
    sql = "INSERT INTO prefixes (prefix, display, owner, status, created_at) VALUES "
    if isinstance(s, SqliteStore):
        with s.transaction() as db:
            db.execute(sql + "('9.9', '9.9', 'x', 'homed', 0)")
            raise Boom
    elif isinstance(s, PostgresStore):
        async with s.transaction() as c:
            await c.execute(sql + "('9.9', '9.9', 'x', 'homed', 0)")
            raise Boom
    else:
        raise AssertionError(f"no transaction helper on {type(s).__name__}")


def test_a_failed_transaction_leaves_nothing_and_the_store_writes_on(store_url: str) -> None:
    """The transaction helper: an exception inside rolls back what the block wrote and
    is raised as it was; the connection is out of the transaction, so writes go on."""

    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            with pytest.raises(Boom):
                await _fail_inside_a_transaction(s)
            assert await s.homed_prefixes() == []
            await s.put_many([HandleRecord("88.1/a", vals(b"x"))])  # a transaction again
            assert await s.count_handles() == 1
        finally:
            await s.close()

    asyncio.run(go())


def test_a_refused_mutation_writes_only_its_audit_row(store_url: str) -> None:
    """mutate: a Refusal from the decision rolls the transaction back and records the
    refusal alone; the next mutation commits its value and its audit row together."""

    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            old = vals(b"old")
            await s.put_many([HandleRecord("88.1/a", old)])

            def refuse(before: bytes | None) -> Outcome:
                raise Refusal(ResponseCode.INSUFFICIENT_PERMISSIONS, "not yours")

            with pytest.raises(Refusal) as refused:
                await s.mutate("88.1/a", refuse, actor="who", op="modify")
            assert refused.value.rc == ResponseCode.INSUFFICIENT_PERMISSIONS
            assert (await s.get_many([s.key("88.1/a")]))[s.key("88.1/a")] == old
            (row,) = await s.audit_for("88.1/a")
            assert (row.rc, row.detail, row.actor, row.op) == (401, "not yours", "who", "modify")
            assert row.before_sha256 == row.after_sha256 == sha256_hex(old)

            new = vals(b"new")
            o = await s.mutate("88.1/a", lambda before: Outcome(new), actor="who", op="modify")
            assert o.rc == ResponseCode.SUCCESS
            assert (await s.get_many([s.key("88.1/a")]))[s.key("88.1/a")] == new
            latest, _ = await s.audit_for("88.1/a")
            assert (latest.rc, latest.after_sha256) == (1, sha256_hex(new))
        finally:
            await s.close()

    asyncio.run(go())


def test_a_connection_lost_during_commit_is_outcome_unknown_not_failure(pg_url: str) -> None:
    """The database connection goes away between the last statement and COMMIT: nobody can
    know whether the write took effect, so the store says exactly that (CommitUnknown,
    which the doors answer as "may have taken effect", never as a failure)."""
    import asyncpg

    from idnode.registry.store import CommitUnknown

    async def scenario() -> None:
        s = PostgresStore(pg_url)
        await s.open()
        killer = await asyncpg.connect(pg_url)
        try:
            with pytest.raises(CommitUnknown):
                async with s.transaction() as c:
                    pid = await c.fetchval("SELECT pg_backend_pid()")
                    await c.execute("CREATE TEMP TABLE scratch (x int)")
                    await killer.execute("SELECT pg_terminate_backend($1)", pid)
            # a statement that fails before COMMIT is still that failure, not "unknown"
            with pytest.raises(asyncpg.UndefinedTableError):
                async with s.transaction() as c:
                    await c.execute("SELECT * FROM no_such_table")
            # and the store writes on, on a fresh connection
            assert await s.put_many([HandleRecord("88.166/after", b"\x00\x00\x00\x00")]) == 1
        finally:
            await killer.close()
            await s.close()

    asyncio.run(scenario())


def test_a_connection_lost_during_a_one_statement_write_is_outcome_unknown(pg_url: str) -> None:
    """A write of one statement commits on its own: a connection lost while it runs may
    have lost the answer of a committed write, so it too is CommitUnknown, not a failure.
    (The statement is held on a row lock so that its backend can be terminated mid-way.)"""
    import asyncpg

    from idnode.registry.store import CommitUnknown

    async def scenario() -> None:
        s = PostgresStore(pg_url)
        await s.open()
        holder = await asyncpg.connect(pg_url)
        killer = await asyncpg.connect(pg_url)
        try:
            await s.home_prefix("88.977", "first")
            hold = holder.transaction()
            await hold.start()
            await holder.execute(
                "SELECT 1 FROM prefixes WHERE prefix = $1 FOR UPDATE", s.key("88.977")
            )
            write = asyncio.create_task(s.home_prefix("88.977", "second"))
            for _ in range(200):  # until the write waits on the lock
                pid = await killer.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'INSERT INTO prefixes%'"
                )
                if pid is not None:
                    break
                await asyncio.sleep(0.05)
            assert pid is not None, "the write never waited on the held row"
            await killer.execute("SELECT pg_terminate_backend($1)", pid)
            with pytest.raises(CommitUnknown):
                await write
            await hold.rollback()
            # a statement the server refuses is still that error, not "unknown"
            with pytest.raises(asyncpg.PostgresError):
                async with s.autocommit() as c:
                    await c.execute("INSERT INTO no_such_table VALUES (1)")
            await s.home_prefix("88.977", "third")  # and the store writes on
            assert "88.977" in await s.homed_prefixes()
        finally:
            await holder.close()
            await killer.close()
            await s.close()

    asyncio.run(scenario())


def test_a_write_decided_on_values_changed_meanwhile_is_decided_again(pg_url: str) -> None:
    """PostgreSQL writes without a lock (compare-and-set on the values read): another
    writer changes the handle between this write's read and its write, so this write
    writes nothing then, reads again and decides on what is there now; the other
    writer's change is kept, and one audit row records this write."""
    import subprocess

    async def go() -> None:
        s = PostgresStore(pg_url)
        await s.open()
        try:
            await s.put_many([HandleRecord("88.1/cas", vals(b"first"))])
            seen: list[bytes | None] = []

            def append(before: bytes | None) -> Outcome:
                seen.append(before)
                if len(seen) == 1:  # another writer gets in between read and write
                    other = vals(b"other").hex()
                    subprocess.run(
                        ["psql", pg_url, "-qAtc",
                         f"UPDATE handles SET vals = '\\x{other}'::bytea,"
                         f" version = version + 1 WHERE handle = '{s.key('88.1/cas')}'"],
                        check=True, capture_output=True, timeout=30,
                    )  # fmt: skip
                assert before is not None
                have = decode_values(before)
                return Outcome(encode_values([*have, HandleValue(2, "EMAIL", b"a@b.cn")]))

            await s.mutate("88.1/cas", append, actor="who", op="ADD_VALUE")
            assert seen == [vals(b"first"), vals(b"other")]
            got = decode_values((await s.get_many([s.key("88.1/cas")]))[s.key("88.1/cas")])
            assert [(v.index, v.data) for v in got] == [(1, b"other"), (2, b"a@b.cn")]
            (row,) = await s.audit_for("88.1/cas")
            assert row.before_sha256 == sha256_hex(vals(b"other"))
        finally:
            await s.close()

    asyncio.run(go())


def test_concurrent_writes_of_one_handle_lose_no_update(store_url: str) -> None:
    """Forty writers each add their own value to one handle at once: all forty values
    are there at the end, each with its audit row (hot contention on PostgreSQL runs
    out of compare-and-set attempts and takes the row lock)."""

    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            await s.put_many([HandleRecord("88.1/hot", vals(b"x"))])

            def adding(i: int) -> Callable[[bytes | None], Outcome]:
                def add(before: bytes | None) -> Outcome:
                    assert before is not None
                    extra = HandleValue(100 + i, "EMAIL", str(i).encode())
                    return Outcome(encode_values([*decode_values(before), extra]))

                return add

            await asyncio.gather(
                *(s.mutate("88.1/hot", adding(i), actor="w", op="ADD_VALUE") for i in range(40))
            )
            got = decode_values((await s.get_many([s.key("88.1/hot")]))[s.key("88.1/hot")])
            assert sorted(v.index for v in got) == [1, *range(100, 140)]
            assert len(await s.audit_for("88.1/hot")) == 40
        finally:
            await s.close()

    asyncio.run(go())


def test_a_write_given_a_stale_reading_decides_again_on_the_primary_s(pg_url: str) -> None:
    """mutate(read=...): the caller's reading (its checks' read, perhaps a replica's)
    is only where a compare-and-set write starts. Stale, it writes nothing and the
    write is decided again on what is there; a refusal decided on it (the handle seemed
    not to exist) is never answered or audited: it too is decided again."""

    async def go() -> None:
        s = PostgresStore(pg_url)
        await s.open()
        try:
            await s.put_many([HandleRecord("88.1/r", vals(b"now"))])
            seen: list[bytes | None] = []

            def replace(before: bytes | None) -> Outcome:
                seen.append(before)
                if before is None:
                    raise Refusal(ResponseCode.HANDLE_NOT_FOUND, "88.1/r does not exist")
                return Outcome(vals(b"after", before))

            await s.mutate("88.1/r", replace, actor="w", op="MODIFY_VALUE", read=vals(b"old"))
            assert seen == [vals(b"old"), vals(b"now")]
            got = (await s.get_many([s.key("88.1/r")]))[s.key("88.1/r")]
            assert got == vals(b"after", vals(b"now"))

            seen.clear()
            await s.mutate("88.1/r", replace, actor="w", op="MODIFY_VALUE", read=None)
            assert seen == [None, got]
            rows = await s.audit_for("88.1/r")
            assert [r.rc for r in rows] == [1, 1]  # no refusal recorded
        finally:
            await s.close()

    asyncio.run(go())


def test_a_write_cancelled_mid_statement_still_tells_the_caches(
    pg_url: str, tmp_path: Path
) -> None:
    """A client hangs up while its write's statement waits on a row lock: the request is
    cancelled, but the statement may commit once the lock goes, so the caches are told
    of the handle all the same (else other workers could serve the old value for the
    cache's whole lifetime)."""
    import asyncpg

    from idnode.registry.names import PrefixAuthority
    from idnode.registry.service import RegistryService
    from tests.integration.sealed_registry import ADMIN

    async def go() -> None:
        told: list[list[str]] = []

        async def on_change(handles: list[str]) -> None:
            told.append(handles)

        s = PostgresStore(pg_url)
        await s.open()
        holder = await asyncpg.connect(pg_url)
        watcher = await asyncpg.connect(pg_url)  # outside the holder's transaction: a
        # transaction sees one snapshot of pg_stat_activity
        try:
            await s.home_prefix("88.166")
            svc = RegistryService(
                s, PrefixAuthority(["88.166"]), server_admins=[ADMIN], on_change=on_change
            )
            await s.put_many([HandleRecord("88.166/held", vals(b"old"))])
            hold = holder.transaction()
            await hold.start()
            await holder.execute(
                "SELECT 1 FROM handles WHERE handle = $1 FOR UPDATE", s.key("88.166/held")
            )
            write = asyncio.create_task(
                svc.writes.put_values("88.166/held", (HandleValue(1, "URL", b"new"),), ADMIN)
            )
            for _ in range(200):  # until the write waits on the held row
                waiting = await watcher.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND query LIKE 'WITH w AS (UPDATE handles%'"
                )
                if waiting:
                    break
                await asyncio.sleep(0.05)
            assert waiting, "the write never waited on the held row"
            write.cancel()
            with pytest.raises(asyncio.CancelledError):
                await write
            await hold.rollback()
            for _ in range(100):
                if told:
                    break
                await asyncio.sleep(0.05)
            assert told == [["88.166/held"]]
        finally:
            await holder.close()
            await watcher.close()
            await s.close()

    asyncio.run(go())


def test_an_audit_entry_row_is_its_fields_in_table_order() -> None:
    """AuditEntry.row() feeds both backends' INSERT: every field, in declared order."""
    import dataclasses

    from idnode.registry.store import AuditEntry

    e = AuditEntry(1, "300:0.NA/88", "MODIFY_VALUE", "88.1/x", 1, "a" * 64, "b" * 64, "why")
    assert e.row() == dataclasses.astuple(e)
    assert len(e.row()) == len(dataclasses.fields(AuditEntry))


def test_the_change_feed_appends_in_order_and_prunes_what_is_past_keeping(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appended keys come back in order with rising ids; the append that crosses a
    multiple of FEED_PRUNE_EVERY drops the rows older than FEED_KEEP_SECONDS (written
    here with a clock set back), and keeps the rest."""
    import time as clock

    from idnode.registry import postgres_store, sqlite_store
    from idnode.registry.store import FEED_KEEP_SECONDS, FEED_PRUNE_EVERY

    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            long_ago = int(clock.time()) - FEED_KEEP_SECONDS - 60
            for module in (postgres_store, sqlite_store):
                monkeypatch.setattr(module, "now", lambda: long_ago)
            first = await s.append_invalidations([f"88.1/old-{i}" for i in range(10)])
            monkeypatch.undo()
            fresh = [f"88.1/new-{i}" for i in range(FEED_PRUNE_EVERY)]
            newest = await s.append_invalidations(fresh[:5])
            assert newest == first + 5
            assert [k for _, k in await s.invalidations_since(0)] == [
                *(f"88.1/old-{i}" for i in range(10)),
                *fresh[:5],
            ]
            newest = await s.append_invalidations(fresh[5:])  # crosses FEED_PRUNE_EVERY
            rows = await s.invalidations_since(0)
            assert [k for _, k in rows] == fresh  # the old rows pruned, the new kept
            assert [i for i, _ in rows] == sorted(i for i, _ in rows)
            assert rows[-1][0] == newest == await s.newest_invalidation()
        finally:
            await s.close()

    asyncio.run(go())
