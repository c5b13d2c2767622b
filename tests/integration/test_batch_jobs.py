"""Background batch uploads (registry/batch_jobs.py) on SQLite and PostgreSQL: reading
JSONL and CSV uploads line by line, a job's results recorded once per line with its
counters, a job only its owner (and server administrators) can read, a job whose worker
stopped read as interrupted (never done) while a slow chunk's heartbeat keeps it running,
the per-administrator bounds (held by uploads started at once on two workers), and
expiry (an expired job is never read, pruned or not)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from idnode.registry import batch_jobs
from idnode.registry.auth import Identity
from idnode.registry.batch_jobs import (
    MAX_RUNNING,
    BatchRefused,
    parse_upload,
)
from idnode.registry.postgres_store import PostgresStore
from idnode.registry.service import RegistryService
from idnode.registry.sqlite_store import SqliteStore
from idnode.registry.store import Store
from idnode.resolver.codec import AdminPermission, AdminRecord, HandleValue, encode_admin
from tests.integration.sealed_registry import open_service

ROOT = Identity("0.NA/88.166", 300)
ALICE = Identity("0.NA/88.166.1001", 300)


async def service(db: str, tmp: Path) -> tuple[Store, RegistryService]:
    return await open_service(db, tmp, [ROOT])


async def sql(store: Store, statement: str, *args: Any) -> None:
    """A test's own change to a job's row ($1.. placeholders; ? on SQLite)."""
    if isinstance(store, PostgresStore):
        async with store.pool.acquire() as c:
            await c.execute(statement, *args)
    else:
        assert isinstance(store, SqliteStore)
        for i in range(len(args), 0, -1):
            statement = statement.replace(f"${i}", "?")
        store.db.execute(statement, args)


def line(handle: str, url: str = "https://e.cn/x") -> str:
    value = {"index": 1, "type": "URL", "data": {"format": "string", "value": url}}
    return json.dumps({"handle": handle, "values": [value]})


def test_reading_uploads() -> None:
    got = parse_upload("\n".join([line("88.166/A"), "", "[1]", '{"handle": "88.166/B"}']), "jsonl")
    assert [(x.number, x.handle, bool(x.error)) for x in got] == [
        (1, "88.166/A", False),
        (3, "", True),
        (4, "88.166/B", True),
    ]
    csv = 'handle,URL,EMAIL@7\n88.166/C,https://e.cn/c,"a@e.cn"\n88.166/D,,\n,x,y\n1,2,3,4\n'
    got = parse_upload(csv, "csv")
    assert [(x.number, x.handle, x.error) for x in got][1:] == [
        (3, "88.166/D", "88.166/D: no values"),
        (4, "", "no handle in this line"),
        (5, "1", "4 cells, the header has 3"),
    ]
    assert [(v.index, v.type, v.data) for v in got[0].values] == [
        (1, "URL", b"https://e.cn/c"),
        (7, "EMAIL", b"a@e.cn"),
    ]
    # Value columns are numbered from 1 wherever the handle column is (never index 0).
    got = parse_upload("URL,handle,EMAIL\nhttps://e.cn/f,88.166/F,f@e.cn\n", "csv")
    assert [(v.index, v.type) for v in got[0].values] == [(1, "URL"), (2, "EMAIL")]
    with pytest.raises(BatchRefused, match="handle"):
        parse_upload("URL,EMAIL\nx,y\n", "csv")
    with pytest.raises(BatchRefused, match="TYPE@index"):
        parse_upload("handle,URL@x\n", "csv")
    with pytest.raises(BatchRefused, match="no lines"):
        parse_upload("\n \n", "jsonl")


def test_a_job_records_each_line_once_for_its_owner(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        # ALICE administers 88.166.1001's handles only (ADD_HANDLE granted at its prefix)
        admin = encode_admin(
            AdminRecord(int(AdminPermission.ADD_HANDLE), ALICE.handle, ALICE.index)
        )
        keys = (HandleValue(100, "HS_ADMIN", admin), HandleValue(300, "HS_SECKEY", b"s"))
        assert (await svc.create("0.NA/88.166.1001", keys, ROOT)).ok
        text = "\n".join(
            [line(f"88.166.1001/J{i}") for i in range(250)] + ["{", line("88.166/NOT-HERS")]
        )
        job = await svc.batch_jobs.start(parse_upload(text, "jsonl"), ALICE)
        await svc.batch_jobs.wait()
        done = await svc.batch_jobs.get(job.id, ALICE)
        assert done is not None
        assert (done.status, done.total, done.done, done.ok, done.failed, done.unknown) == (
            "done",
            252,
            252,
            250,
            2,
            0,
        )
        assert [r.line for r in done.results] == list(range(1, 253))
        assert done.results[251].code != 1 and done.results[251].handle == "88.166/NOT-HERS"
        # readable by its owner and server administrators only
        assert await svc.batch_jobs.get(job.id, ROOT) is not None
        assert await svc.batch_jobs.get(job.id, Identity("88.166/OTHER", 300)) is None
        assert [j.id for j in await svc.batch_jobs.of(ALICE)] == [job.id]
        await store.close()

    asyncio.run(go())


def test_stalled_jobs_bounds_and_expiry(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        jobs = svc.batch_jobs
        one = await jobs.start(parse_upload(line("88.166/S1"), "jsonl"), ROOT)
        await jobs.wait()
        # a job left running by a worker that stopped: interrupted once its heartbeat is old
        await sql(store, "UPDATE batch_jobs SET state = 'running', updated_at = 0 WHERE id = $1",
                  one.id)  # fmt: skip
        stalled = await jobs.get(one.id, ROOT)
        assert stalled is not None and stalled.status == "interrupted"
        assert "may or may not have been written" in stalled.to_json()["message"]
        # an interrupted job does not count as running; MAX_RUNNING fresh ones do
        running = []
        for i in range(MAX_RUNNING):
            j = await jobs.start(parse_upload(line(f"88.166/R{i}"), "jsonl"), ROOT)
            running.append(j.id)
        await jobs.wait()
        for job_id in running:
            await sql(store, "UPDATE batch_jobs SET state = 'running', updated_at = $1"
                      " WHERE id = $2", 1e12, job_id)  # fmt: skip
        with pytest.raises(BatchRefused, match="running") as refused:
            await jobs.start(parse_upload(line("88.166/R9"), "jsonl"), ROOT)
        assert refused.value.status == 429
        # expired jobs are deleted (with their lines) when the next upload starts
        await sql(store, "UPDATE batch_jobs SET expires_at = 0")
        fresh = await jobs.start(parse_upload(line("88.166/E1"), "jsonl"), ROOT)
        await jobs.wait()
        assert await jobs.get(one.id, ROOT) is None
        assert [j.id for j in await jobs.of(ROOT)] == [fresh.id]
        await store.close()

    asyncio.run(go())


def test_an_expired_job_is_not_read_before_it_is_pruned(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store, svc = await service(store_url, tmp_path)
        jobs = svc.batch_jobs
        job = await jobs.start(parse_upload(line("88.166/X1"), "jsonl"), ROOT)
        await jobs.wait()
        await sql(store, "UPDATE batch_jobs SET expires_at = 1 WHERE id = $1", job.id)
        assert await jobs.get(job.id, ROOT) is None
        assert await jobs.of(ROOT) == []
        await store.close()

    asyncio.run(go())


def test_bounds_hold_for_uploads_started_at_once_on_two_workers(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_jobs, "MAX_KEPT", 3)  # kept jobs only grow: an exact bound
    monkeypatch.setattr(batch_jobs, "MAX_RUNNING", 100)

    async def go() -> None:
        (s1, w1), (s2, w2) = [await service(pg_url, tmp_path) for _ in range(2)]
        upload = parse_upload(line("88.166/AT-ONCE"), "jsonl")
        starts = [w.batch_jobs.start(upload, ROOT) for w in (w1, w2) for _ in range(4)]
        outcome = await asyncio.gather(*starts, return_exceptions=True)
        await w1.batch_jobs.wait()
        await w2.batch_jobs.wait()
        refused = [o for o in outcome if isinstance(o, BatchRefused)]
        assert len(refused) == 5 and all("kept" in str(r) and r.status == 429 for r in refused)
        assert len(await w1.batch_jobs.of(ROOT)) == 3
        for s in (s1, s2):
            await s.close()

    asyncio.run(go())


def test_a_slow_chunk_keeps_its_job_alive(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(batch_jobs, "HEARTBEAT_SECONDS", 0.05)

    async def go() -> None:
        store, svc = await service(pg_url, tmp_path)
        locker = await asyncpg.connect(pg_url)  # holds the chunk's write, as a busy registry
        tx = locker.transaction()
        await tx.start()
        await locker.execute("LOCK TABLE handles IN EXCLUSIVE MODE")
        job = await svc.batch_jobs.start(parse_upload(line("88.166/SLOW"), "jsonl"), ROOT)
        moved = None
        for _ in range(400):  # until the heartbeat moves (it never did before the fix)
            moved = await locker.fetchrow(
                "SELECT done, updated_at FROM batch_jobs WHERE id = $1 AND updated_at > $2",
                job.id,
                job.updated_at,
            )
            if moved is not None:
                break
            await asyncio.sleep(0.05)
        assert moved is not None and moved["done"] == 0  # alive, its chunk still waiting
        await tx.rollback()
        await locker.close()
        await svc.batch_jobs.wait()
        done = await svc.batch_jobs.get(job.id, ROOT)
        assert done is not None and (done.status, done.ok) == ("done", 1)
        await store.close()

    asyncio.run(go())
