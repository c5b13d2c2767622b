"""The batched create (Store.create_many) without a multi-key SELECT ... FOR UPDATE
(registry/postgres_store.py: an unlocked read, inserts ON CONFLICT DO NOTHING, a
replacement a compare-and-set on the version and values read): the verdicts and audit
rows of a replacing batch on both backends; on a real PostgreSQL a row changed, deleted
or set to the batch's values while the batch waits is decided again on what was
committed, and concurrent overlapping batches lose no update and do not deadlock."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from idnode.registry.postgres_store import CAS_RETRIES, PostgresStore
from idnode.registry.store import REGISTERED_ALREADY, HandleRecord, open_store, sha256_hex
from idnode.resolver.codec import HandleValue, decode_values, encode_values
from idnode.resolver.codec.codes import ResponseCode

RC = ResponseCode


def vals(data: bytes) -> bytes:
    return encode_values([HandleValue(1, "URL", data)])


def test_a_replacing_batch_gives_a_verdict_and_an_audit_row_per_record(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            made = await s.create_many(
                [HandleRecord("88.1/A", vals(b"a")), HandleRecord("88.1/B", vals(b"b"))],
                actor="t",
                op="BATCH_CREATE",
            )
            assert made == {"88.1/A": (RC.SUCCESS, "created"), "88.1/B": (RC.SUCCESS, "created")}
            batch = [
                HandleRecord("88.1/A", vals(b"a2")),  # other values: replaced
                HandleRecord("88.1/B", vals(b"b")),  # the same: nothing written
                HandleRecord("88.1/C", vals(b"c")),  # new
            ]
            kept = await s.create_many(batch[:2], actor="t", op="BATCH_CREATE")
            assert kept["88.1/A"][0] == RC.HANDLE_ALREADY_EXISTS
            got = await s.create_many(batch, actor="t", op="BATCH_CREATE", replace=True)
            assert got == {
                "88.1/A": (RC.SUCCESS, "replaced"),
                "88.1/B": (RC.SUCCESS, REGISTERED_ALREADY),
                "88.1/C": (RC.SUCCESS, "created"),
            }
            values = await s.get_many(["88.1/A", "88.1/B", "88.1/C"])
            assert {k: decode_values(v)[0].data for k, v in values.items()} == {
                "88.1/A": b"a2",
                "88.1/B": b"b",
                "88.1/C": b"c",
            }
            (replaced, refused, created) = await s.audit_for("88.1/A")
            assert created.detail == "created" and refused.rc == RC.HANDLE_ALREADY_EXISTS
            assert (replaced.detail, replaced.before_sha256, replaced.after_sha256) == (
                "replaced",
                sha256_hex(vals(b"a")),
                sha256_hex(vals(b"a2")),
            )
            assert [e.detail for e in await s.audit_for("88.1/B")] == ["created"]
        finally:
            await s.close()

    asyncio.run(go())


async def _waiting_on_a_lock(url: str) -> None:
    """Until some other backend of this database waits for a row lock."""
    c = await asyncpg.connect(url)
    try:
        async with asyncio.timeout(60):  # a batch that never waits fails here, not hangs
            while not await c.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            ):
                await asyncio.sleep(0.01)
    finally:
        await c.close()


async def _during_a_replace(
    url: str, meanwhile: Callable[[asyncpg.Connection], Awaitable[object]]
) -> tuple[PostgresStore, dict[str, tuple[int, str]]]:
    """88.1/K holds "old"; another transaction runs ``meanwhile`` on it and commits
    while a batch replacing 88.1/K and 88.1/L with "new" waits for its row lock. The
    batch's verdicts (the store is left open for the caller to read and close)."""
    s = PostgresStore(url)
    await s.open()
    await s.create_many(
        [HandleRecord("88.1/K", vals(b"old")), HandleRecord("88.1/L", vals(b"old"))],
        actor="t",
        op="BATCH_CREATE",
    )
    other = await asyncpg.connect(url)
    try:
        tx = other.transaction()
        await tx.start()
        await meanwhile(other)  # holds 88.1/K's row lock until the commit
        batch = asyncio.create_task(
            s.create_many(
                [HandleRecord("88.1/L", vals(b"new")), HandleRecord("88.1/K", vals(b"new"))],
                actor="t",
                op="BATCH_CREATE",
                replace=True,
            )
        )
        await _waiting_on_a_lock(url)  # the batch read "old" and waits in its UPDATE
        await tx.commit()
        return s, await batch
    finally:
        await other.close()


def test_a_row_changed_while_a_replace_waits_is_replaced_at_its_new_value(pg_url: str) -> None:
    async def go() -> None:
        before = CAS_RETRIES._value.get()
        s, got = await _during_a_replace(
            pg_url,
            lambda c: c.execute(
                "UPDATE handles SET vals = $1, version = version + 1 WHERE handle = '88.1/K'",
                vals(b"theirs"),
            ),
        )
        try:
            assert got == {"88.1/K": (RC.SUCCESS, "replaced"), "88.1/L": (RC.SUCCESS, "replaced")}
            assert CAS_RETRIES._value.get() == before + 1
            assert decode_values((await s.get_many(["88.1/K"]))["88.1/K"])[0].data == b"new"
            # the audit row names the value replaced: the one committed meanwhile
            last = (await s.audit_for("88.1/K"))[0]
            assert last.before_sha256 == sha256_hex(vals(b"theirs"))
            assert last.after_sha256 == sha256_hex(vals(b"new"))
        finally:
            await s.close()

    asyncio.run(go())


def test_a_row_set_to_the_batch_values_meanwhile_is_left_alone(pg_url: str) -> None:
    async def go() -> None:
        s, got = await _during_a_replace(
            pg_url,
            lambda c: c.execute(
                "UPDATE handles SET vals = $1, version = version + 1 WHERE handle = '88.1/K'",
                vals(b"new"),
            ),
        )
        try:
            assert got["88.1/K"] == (RC.SUCCESS, REGISTERED_ALREADY)  # nothing to write
            assert [e.detail for e in await s.audit_for("88.1/K")] == ["created"]
        finally:
            await s.close()

    asyncio.run(go())


def test_a_row_deleted_and_made_again_meanwhile_is_not_taken_for_the_one_read(
    pg_url: str,
) -> None:
    async def go() -> None:
        async def remake(c: asyncpg.Connection) -> None:
            # deleted and made again with other values: version 1 again, as read
            await c.execute("DELETE FROM handles WHERE handle = '88.1/K'")
            await c.execute(
                "INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
                " updated_at) VALUES ('88.1/K', '88.1/K', '88.1', $1, 1, 0, 0)",
                vals(b"theirs"),
            )

        s, got = await _during_a_replace(pg_url, remake)
        try:
            assert got["88.1/K"] == (RC.SUCCESS, "replaced")
            last = (await s.audit_for("88.1/K"))[0]
            assert last.before_sha256 == sha256_hex(vals(b"theirs"))
        finally:
            await s.close()

    asyncio.run(go())


def test_a_row_deleted_meanwhile_is_created(pg_url: str) -> None:
    async def go() -> None:
        s, got = await _during_a_replace(
            pg_url, lambda c: c.execute("DELETE FROM handles WHERE handle = '88.1/K'")
        )
        try:
            assert got["88.1/K"] == (RC.SUCCESS, "created")
            assert decode_values((await s.get_many(["88.1/K"]))["88.1/K"])[0].data == b"new"
        finally:
            await s.close()

    asyncio.run(go())


KEYS = [f"88.1/C-{i:03d}" for i in range(150)]


def test_concurrent_overlapping_replacing_batches_lose_no_update(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Four writers replace the same 150 handles, each batch in its own order, eight
    times each: no deadlock, and every handle's audit rows form one chain (each
    replacement replaced what the one before wrote: none was lost)."""

    async def go() -> None:
        s = PostgresStore(pg_url, pool_size=5)
        await s.open()
        try:
            await s.create_many(
                [HandleRecord(k, vals(b"0")) for k in KEYS], actor="t", op="BATCH_CREATE"
            )

            async def writer(w: int) -> None:
                rnd = random.Random(w)
                for n in range(8):
                    batch = [HandleRecord(k, vals(b"%d-%d" % (w, n))) for k in KEYS]
                    rnd.shuffle(batch)
                    got = await s.create_many(batch, actor=f"w{w}", op="BATCH_CREATE", replace=True)
                    assert {v for v in got.values()} == {(RC.SUCCESS, "replaced")}, got

            await asyncio.gather(*(writer(w) for w in range(4)))
            final = await s.get_many(KEYS)
            for k in KEYS:
                trail = list(reversed(await s.audit_for(k)))  # oldest first
                assert len(trail) == 1 + 4 * 8
                for before, after in itertools.pairwise(trail):
                    assert after.before_sha256 == before.after_sha256, (k, trail)
                assert trail[-1].after_sha256 == sha256_hex(final[k])
        finally:
            await s.close()

    with caplog.at_level(logging.WARNING, logger="idnode.registry.postgres_store"):
        asyncio.run(go())
    # every batch took its row locks in key order: none deadlocked (none was run again)
    assert not [r for r in caplog.records if "deadlocked" in r.getMessage()]
