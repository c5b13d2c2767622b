"""Batch uploads that run in the background (``POST /api/batches``, the console's upload
page): a JSONL or CSV body becomes a job whose progress and per-line results any
worker can read, because they live in the registry (tables ``batch_jobs`` and
``batch_job_lines``, migration 0015), not in the worker that runs it.

The lines go through the registry's batch path (batches.py) as ``idnode import``'s do,
in chunks of :data:`CHUNK`: each chunk is one statement and one transaction, and its
results are recorded (counters and lines, one transaction) only after it returned. So
a line is reported ``ok`` or ``failed`` only once the registry said so; a chunk whose
outcome the registry did not confirm is reported ``unknown`` (it may have been written:
uploading it again is safe, a line with the same values succeeds again), and a job whose
worker stopped mid-way shows ``interrupted`` once its heartbeat is :data:`STALE_SECONDS`
old, never ``done``. The heartbeat is refreshed every :data:`HEARTBEAT_SECONDS` while a
chunk runs, so a slow chunk (a registry under load) is not mistaken for a lost worker.

Bounds, since uploads come from enterprises: :data:`MAX_LINES` lines an upload,
:data:`MAX_RUNNING` jobs running at once and :data:`MAX_KEPT` kept per administrator,
each kept :data:`KEEP_SECONDS`: reads never show an expired job, and expired jobs are
deleted when a job starts and at most every :data:`PRUNE_SECONDS` when jobs are read
(``batch_jobs.expires_at`` is indexed, migration 0016). The bounds are checked and the
job recorded in one transaction, under a lock on the owner (PostgreSQL: an advisory
transaction lock; SQLite: BEGIN IMMEDIATE), so workers started at once cannot overshoot.

Formats. JSON Lines as ``idnode import`` reads them
(``{"handle": "88.166/A1", "values": [{"index": 1, "type": "URL", "data": ...}]}``), or
CSV with a header row: a ``handle`` column, and one column per value, named by its type
(``URL``) or ``TYPE@index`` (``EMAIL@2``); a value without ``@index`` takes its position
among the value columns as index, from 1, wherever the handle column is (``handle,URL``
and ``URL,handle`` both give URL index 1). Empty cells are no value.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from idnode.resolver.codec import HandleValue, ProtocolError, ResponseCode
from idnode.resolver.codec.jsonform import values_from_json

from .auth import Identity
from .batches import Batches
from .permissions import Permissions
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import CommitUnknown, Refusal, Store, StoreError

RC = ResponseCode
log = logging.getLogger("idnode.registry.batch_jobs")

MAX_LINES = 5000  # lines an upload (the REST body limit, 1 MiB, usually comes first)
MAX_RUNNING = 2  # jobs of one administrator running at once
MAX_KEPT = 50  # jobs of one administrator kept (running or finished)
KEEP_SECONDS = 3600  # a job and its results are kept this long after it started
CHUNK = 100  # lines a transaction: the progress bar moves at least this often
STALE_SECONDS = 60.0  # a running job not heard from for this long has lost its worker
HEARTBEAT_SECONDS = STALE_SECONDS / 4  # how often a running chunk says it is alive
PRUNE_SECONDS = 60.0  # a worker deletes expired jobs at most this often when reading

UNCONFIRMED = (
    "the registry did not confirm this chunk ({reason}): these lines may have been "
    "written; upload them again to be sure (a line with the same values succeeds again)"
)


class BatchRefused(ValueError):
    """An upload this node will not take (the message says why); ``status`` is the HTTP
    status a door answers with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Line:
    """One line of an upload: what to write, or why it cannot be read."""

    number: int
    handle: str
    values: tuple[HandleValue, ...] = ()
    error: str = ""


@dataclass(frozen=True)
class LineResult:
    line: int
    handle: str
    status: str  # ok, failed, unknown
    code: int
    message: str

    def to_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "handle": self.handle,
            "status": self.status,
            "responseCode": self.code,
            "message": self.message,
        }


@dataclass(frozen=True)
class Job:
    id: str
    owner: str
    created_at: float
    updated_at: float
    expires_at: int
    total: int
    done: int
    ok: int
    failed: int
    unknown: int
    state: str  # running, done, stopped (the row); interrupted is read off the heartbeat
    message: str
    results: list[LineResult] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.state == "running" and time.time() - self.updated_at > STALE_SECONDS:
            return "interrupted"
        return self.state

    def to_json(self, *, results: bool = True) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "owner": self.owner,
            "createdAt": int(self.created_at),
            "expiresAt": self.expires_at,
            "state": self.status,
            "total": self.total,
            "done": self.done,
            "ok": self.ok,
            "failed": self.failed,
            "unknown": self.unknown,
            "message": self.message,
        }
        if self.status == "interrupted":
            doc["message"] = (
                f"the worker running this job stopped after {self.done} of {self.total} "
                "lines; the lines with no result may or may not have been written: upload "
                "them again (a line with the same values succeeds again)"
            )
        if results:
            doc["results"] = [r.to_json() for r in self.results]
        return doc


# --- reading an upload -----------------------------------------------------------------


def parse_upload(text: str, kind: str) -> list[Line]:
    """The lines of a JSONL (``kind`` "jsonl") or CSV ("csv") upload; blank lines skipped.
    Raises BatchRefused for an upload that cannot be read at all (no header, too long)."""
    lines = _parse_csv(text) if kind == "csv" else _parse_jsonl(text)
    if not lines:
        raise BatchRefused("the upload holds no lines")
    if len(lines) > MAX_LINES:
        raise BatchRefused(f"{len(lines)} lines: at most {MAX_LINES} an upload", 413)
    return lines


def _parse_jsonl(text: str) -> list[Line]:
    from .importer import parse_line  # importer builds on the service, which builds on this

    out: list[Line] = []
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        if len(out) > MAX_LINES:
            break  # counted as too many; no need to read the rest
        try:
            handle, values = parse_line(raw)
        except (ValueError, ProtocolError, Refusal) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            out.append(Line(number, _handle_guess(raw), error=reason))
            continue
        out.append(Line(number, handle, values))
    return out


def _handle_guess(raw: str) -> str:
    """The handle a bad JSON line meant, when it can be seen (for the result table)."""
    try:
        obj = json.loads(raw)
    except ValueError:
        return ""
    h = obj.get("handle") if isinstance(obj, dict) else None
    return h if isinstance(h, str) else ""


def _columns(header: list[str]) -> list[tuple[str, int] | None]:
    """Each CSV column's (type, index); None for the handle column."""
    names = [h.strip() for h in header]
    if "handle" not in [n.lower() for n in names]:
        raise BatchRefused('a CSV upload starts with a header row naming a "handle" column')
    cols: list[tuple[str, int] | None] = []
    value_columns = 0  # numbered from 1 whatever the handle column's place: never index 0
    for position, name in enumerate(names):
        if name.lower() == "handle":
            cols.append(None)
            continue
        value_columns += 1
        kind, at, index = name.partition("@")
        if not kind or (at and not index.isdigit()):
            raise BatchRefused(f"CSV column {position + 1} ({name!r}): TYPE or TYPE@index")
        cols.append((kind, int(index) if at else value_columns))
    return cols


def _parse_csv(text: str) -> list[Line]:
    rows = csv.reader(io.StringIO(text))
    try:
        header = next(rows)
    except StopIteration:
        return []
    except csv.Error as exc:
        raise BatchRefused(f"the CSV header cannot be read: {exc}") from None
    cols = _columns(header)
    out: list[Line] = []
    try:
        for row in rows:
            number = rows.line_num
            if not any(c.strip() for c in row):
                continue
            if len(out) > MAX_LINES:
                break
            handle = next((c for c, col in zip(row, cols, strict=False) if col is None), "")
            if len(row) > len(cols):
                out.append(
                    Line(number, handle, error=f"{len(row)} cells, the header has {len(cols)}")
                )
                continue
            items = [
                {"index": col[1], "type": col[0], "data": {"format": "string", "value": cell}}
                for cell, col in zip(row, cols, strict=False)
                if col is not None and cell != ""
            ]
            try:
                values = values_from_json(items)
            except ProtocolError as exc:
                out.append(Line(number, handle, error=exc.reason))
                continue
            if not handle:
                out.append(Line(number, "", error="no handle in this line"))
            elif not values:
                out.append(Line(number, handle, error=f"{handle}: no values"))
            else:
                out.append(Line(number, handle, values))
    except csv.Error as exc:
        out.append(Line(rows.line_num, "", error=f"CSV: {exc}; the rest was not read"))
    return out


# --- jobs -------------------------------------------------------------------------------


class BatchJobs:
    """Start, run and read upload jobs (the registry service's ``batch_jobs``)."""

    def __init__(self, store: Store, batches: Batches, permissions: Permissions) -> None:
        self.store = store
        self.batches = batches
        self.permissions = permissions
        self._running: set[asyncio.Task[None]] = set()  # kept: a task nobody holds may vanish
        self._pruned_at = 0.0  # monotonic time of this worker's last prune

    def owner(self, who: Identity) -> str:
        handle, index = self.permissions.key(who)
        return f"{index}:{handle}"

    async def start(self, lines: Sequence[Line], who: Identity, *, replace: bool = False) -> Job:
        """Record a job for ``lines`` (the unreadable ones get their results at once) and
        run it in this worker. Raises BatchRefused past the per-admin bounds, Refusal for
        a replace by anyone but a server administrator."""
        if replace and not self.permissions.is_server_admin(who):
            raise Refusal(RC.INSUFFICIENT_PERMISSIONS, "only server administrators may replace")
        owner = self.owner(who)
        now = time.time()
        await self._prune(int(now))
        job_id = secrets.token_hex(8)
        bad = [
            LineResult(n.number, n.handle, "failed", int(RC.INVALID_VALUE), n.error)
            for n in lines
            if n.error
        ]
        await self._admit(job_id, owner, str(who), now, len(lines), bad)
        good = [n for n in lines if not n.error]
        task = asyncio.get_running_loop().create_task(self._run(job_id, good, who, replace))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        job = await self.get(job_id, who, results=False)
        assert job is not None
        return job

    async def wait(self) -> None:
        """Wait for this worker's jobs to finish (tests, shutdown)."""
        while self._running:
            await asyncio.gather(*list(self._running), return_exceptions=True)

    async def _run(self, job_id: str, lines: list[Line], who: Identity, replace: bool) -> None:
        try:
            for start in range(0, len(lines), CHUNK):
                chunk = lines[start : start + CHUNK]
                beat = asyncio.get_running_loop().create_task(self._heartbeat(job_id))
                try:
                    results, stop = await self._write(chunk, who, replace)
                finally:
                    beat.cancel()
                    await asyncio.gather(beat, return_exceptions=True)
                if stop:
                    rest = lines[start + CHUNK :]
                    results += [
                        LineResult(
                            n.number,
                            n.handle,
                            "failed",
                            int(RC.ERROR),
                            f"not attempted: the job stopped at line {chunk[0].number}",
                        )
                        for n in rest
                    ]
                    await self._record(job_id, results, "stopped", stop)
                    return
                more = start + CHUNK < len(lines)
                await self._record(job_id, results, "running" if more else "done")
            if not lines:
                await self._record(job_id, [], "done")
        except Exception:  # the registry went away while recording: the heartbeat goes stale
            log.exception("batch job %s stopped", job_id)

    async def _heartbeat(self, job_id: str) -> None:
        """While a chunk runs: move the job's heartbeat every HEARTBEAT_SECONDS, so a slow
        chunk is not read as an interrupted job by other workers."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                await self._beat(job_id, time.time())
            except Exception:  # the registry is busy or away: the next beat tries again
                log.warning("batch job %s: heartbeat not recorded", job_id, exc_info=True)

    async def _write(
        self, chunk: list[Line], who: Identity, replace: bool
    ) -> tuple[list[LineResult], str]:
        """One chunk through the batch path: its results, and why the job must stop
        ("" to go on)."""
        try:
            items = await self.batches.create(
                [(n.handle, n.values) for n in chunk], who, replace=replace
            )
        except Refusal as exc:  # refused whole before anything was written
            return [
                LineResult(n.number, n.handle, "failed", int(exc.rc), exc.message) for n in chunk
            ], exc.message
        except Exception as exc:  # whatever it was, the registry did not confirm the chunk
            reason = (
                "the connection was lost while committing"
                if isinstance(exc, CommitUnknown)
                else f"{type(exc).__name__}: {exc}"
            )
            log.warning("batch chunk of %d lines unconfirmed: %s", len(chunk), reason)
            msg = UNCONFIRMED.format(reason=reason)
            return [
                LineResult(n.number, n.handle, "unknown", int(RC.ERROR), msg) for n in chunk
            ], msg
        return [
            LineResult(
                n.number,
                item.handle,
                "ok" if item.code == RC.SUCCESS else "failed",
                int(item.code),
                item.message or ("created" if item.code == RC.SUCCESS else ""),
            )
            for n, item in zip(chunk, items, strict=True)
        ], ""

    async def get(self, job_id: str, who: Identity, *, results: bool = True) -> Job | None:
        """The job, if ``who`` owns it or is a server administrator; else None."""
        await self._prune_now_and_then()
        job = await self._read(job_id, results)
        if job is None:
            return None
        if job.owner != self.owner(who) and not self.permissions.is_server_admin(who):
            return None
        return job

    async def of(self, who: Identity) -> list[Job]:
        """``who``'s kept jobs, newest first (without their lines)."""
        await self._prune_now_and_then()
        return await self._list(self.owner(who))

    async def _prune_now_and_then(self) -> None:
        if time.monotonic() - self._pruned_at >= PRUNE_SECONDS:
            await self._prune(int(time.time()))

    # --- SQL, one branch per backend ----------------------------------------------------

    async def _prune(self, now: int) -> None:
        self._pruned_at = time.monotonic()
        store = self.store
        sql_lines = (
            "DELETE FROM batch_job_lines WHERE job_id IN"
            " (SELECT id FROM batch_jobs WHERE expires_at < {p})"
        )
        sql_jobs = "DELETE FROM batch_jobs WHERE expires_at < {p}"
        if isinstance(store, PostgresStore):
            async with store.transaction() as c:
                await c.execute(sql_lines.format(p="$1"), now)
                await c.execute(sql_jobs.format(p="$1"), now)
        elif isinstance(store, SqliteStore):
            with store.transaction() as db:
                db.execute(sql_lines.format(p="?"), (now,))
                db.execute(sql_jobs.format(p="?"), (now,))
        else:
            raise StoreError(f"no batch jobs on {type(store).__name__}")

    def _refusal(self, who: str, running: int, kept: int) -> BatchRefused | None:
        if running >= MAX_RUNNING:
            return BatchRefused(
                f"{running} uploads of {who} are running: wait for one to finish", 429
            )
        if kept >= MAX_KEPT:
            return BatchRefused(
                f"{kept} uploads of {who} are kept (each for {KEEP_SECONDS // 60} minutes): "
                "wait for the oldest to expire",
                429,
            )
        return None

    async def _admit(
        self, job_id: str, owner: str, who: str, now: float, total: int, bad: list[LineResult]
    ) -> None:
        """Check the owner's bounds and record the job, in one transaction under a lock on
        the owner: two uploads started at once on two workers cannot both pass the count.
        Raises BatchRefused past a bound."""
        counts = (
            "SELECT count(*) FILTER (WHERE state = 'running' AND updated_at > {a}),"
            " count(*) FROM batch_jobs WHERE owner = {b} AND expires_at >= {c}"
        )
        job = (
            "INSERT INTO batch_jobs (id, owner, created_at, updated_at, expires_at, total,"
            " done, ok, failed, unknown, state, message)"
            " VALUES ({}, {}, {}, {}, {}, {}, {}, 0, {}, 0, 'running', '')"
        )
        args = (job_id, owner, now, now, int(now) + KEEP_SECONDS, total, len(bad), len(bad))
        fresh_after = now - STALE_SECONDS
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.transaction() as c:
                await c.execute("SELECT pg_advisory_xact_lock(hashtext($1))", owner)
                row = await c.fetchrow(
                    counts.format(a="$1", b="$2", c="$3"), fresh_after, owner, int(now)
                )
                refused = self._refusal(who, int(row[0]), int(row[1]))
                if refused is not None:
                    raise refused
                await c.execute(job.format(*(f"${i}" for i in range(1, 9))), *args)
                await self._lines_pg(c, job_id, bad)
        elif isinstance(store, SqliteStore):
            with store.transaction() as db:  # BEGIN IMMEDIATE: the write lock first
                row = db.execute(
                    counts.format(a="?", b="?", c="?"), (fresh_after, owner, int(now))
                ).fetchone()
                refused = self._refusal(who, int(row[0]), int(row[1]))
                if refused is not None:
                    raise refused
                db.execute(job.format(*("?" * 8)), args)
                self._lines_sqlite(store, job_id, bad)
        else:
            raise StoreError(f"no batch jobs on {type(store).__name__}")

    async def _beat(self, job_id: str, at: float) -> None:
        sql = "UPDATE batch_jobs SET updated_at = {} WHERE id = {} AND state = 'running'"
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.pool.acquire() as c:
                await c.execute(sql.format("$1", "$2"), at, job_id)
        elif isinstance(store, SqliteStore):
            with store.transaction() as db:
                db.execute(sql.format("?", "?"), (at, job_id))

    @staticmethod
    async def _lines_pg(c: Any, job_id: str, results: list[LineResult]) -> None:
        if results:
            await c.executemany(
                "INSERT INTO batch_job_lines (job_id, line, handle, status, code, message)"
                " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
                [(job_id, r.line, r.handle, r.status, r.code, r.message) for r in results],
            )

    @staticmethod
    def _lines_sqlite(store: SqliteStore, job_id: str, results: list[LineResult]) -> None:
        store.db.executemany(
            "INSERT OR IGNORE INTO batch_job_lines (job_id, line, handle, status, code, message)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [(job_id, r.line, r.handle, r.status, r.code, r.message) for r in results],
        )

    async def _record(
        self, job_id: str, results: list[LineResult], state: str, message: str = ""
    ) -> None:
        """A chunk's results and the counters, in one transaction; the heartbeat moves."""
        ok = sum(r.status == "ok" for r in results)
        failed = sum(r.status == "failed" for r in results)
        unknown = sum(r.status == "unknown" for r in results)
        sql = (
            "UPDATE batch_jobs SET done = done + {}, ok = ok + {}, failed = failed + {},"
            " unknown = unknown + {}, state = {}, message = {}, updated_at = {} WHERE id = {}"
        )
        args = (len(results), ok, failed, unknown, state, message, time.time(), job_id)
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.transaction() as c:
                await self._lines_pg(c, job_id, results)
                await c.execute(sql.format(*(f"${i}" for i in range(1, 9))), *args)
        elif isinstance(store, SqliteStore):
            with store.transaction() as db:
                self._lines_sqlite(store, job_id, results)
                db.execute(sql.format(*("?" * 8)), args)
        else:
            raise StoreError(f"no batch jobs on {type(store).__name__}")

    _COLUMNS = (
        "id, owner, created_at, updated_at, expires_at, total, done, ok, failed, unknown,"
        " state, message"
    )

    @staticmethod
    def _job(r: Sequence[Any], results: list[LineResult] | None = None) -> Job:
        return Job(
            str(r[0]),
            str(r[1]),
            float(r[2]),
            float(r[3]),
            int(r[4]),
            int(r[5]),
            int(r[6]),
            int(r[7]),
            int(r[8]),
            int(r[9]),
            str(r[10]),
            str(r[11]),
            results or [],
        )

    async def _read(self, job_id: str, results: bool) -> Job | None:
        one = f"SELECT {self._COLUMNS} FROM batch_jobs WHERE id = {{}} AND expires_at >= {{}}"
        lines = (
            "SELECT line, handle, status, code, message FROM batch_job_lines"
            " WHERE job_id = {} ORDER BY line"
        )
        store = self.store
        if isinstance(store, PostgresStore):
            # One snapshot: the counters and the lines they count.
            async with store.pool.acquire() as c, c.transaction(isolation="repeatable_read"):
                row = await c.fetchrow(one.format("$1", "$2"), job_id, int(time.time()))
                rows = await c.fetch(lines.format("$1"), job_id) if row and results else []
        elif isinstance(store, SqliteStore):
            row = store.db.execute(one.format("?", "?"), (job_id, int(time.time()))).fetchone()
            rows = (
                store.db.execute(lines.format("?"), (job_id,)).fetchall() if row and results else []
            )
        else:
            raise StoreError(f"no batch jobs on {type(store).__name__}")
        if row is None:
            return None
        found = [LineResult(int(r[0]), str(r[1]), str(r[2]), int(r[3]), str(r[4])) for r in rows]
        return self._job(row, found)

    async def _list(self, owner: str) -> list[Job]:
        sql = (
            f"SELECT {self._COLUMNS} FROM batch_jobs WHERE owner = {{}} AND expires_at >= {{}}"
            f" ORDER BY created_at DESC, id LIMIT {MAX_KEPT}"
        )
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.pool.acquire() as c:
                rows = await c.fetch(sql.format("$1", "$2"), owner, int(time.time()))
        elif isinstance(store, SqliteStore):
            rows = store.db.execute(sql.format("?", "?"), (owner, int(time.time()))).fetchall()
        else:
            raise StoreError(f"no batch jobs on {type(store).__name__}")
        return [self._job(r) for r in rows]
