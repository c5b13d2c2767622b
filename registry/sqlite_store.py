"""The embedded SQLite store.

It calls sqlite3 directly on the event loop thread. A point read is a few
microseconds, and aiosqlite's thread hop measured ~4.7k lookups/s here against
~112k/s for plain sqlite3. WAL mode lets several worker processes read the same
file while one writes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from idnode.resolver.codec.codes import ResponseCode

from .names import NA_PREFIX, key_range, storage_prefix
from .store import (
    APPLICATION_COLUMNS,
    FEED_KEEP_SECONDS,
    RECEIVED_COLUMNS,
    REGISTERED_ALREADY,
    SESSION_COLUMNS,
    STATISTICS_COLUMNS,
    UNREAD,
    ApplicationRow,
    AuditEntry,
    Counts,
    HandleRecord,
    Keep,
    Mutator,
    NewSession,
    Outcome,
    ReceivedRow,
    Refusal,
    ReplayCheck,
    SessionRow,
    StatisticsRow,
    Store,
    StoreError,
    Unread,
    application_row,
    feed_prune_due,
    now,
    received_row,
    session_row,
    sha256_hex,
    statistics_row,
)
from .value_index import sqlite_sync

_CHUNK = 500  # stays under SQLite's bound-parameter limit


class SqliteStore(Store):
    def __init__(self, url: str, case_sensitive: bool = False) -> None:
        # --search-index: every write keeps search_values in step (registry/value_index.py)
        self.search_index = False
        super().__init__(url, case_sensitive)
        self.path = url[len("sqlite:///") :]
        self._db: sqlite3.Connection | None = None

    async def open(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.execute("SELECT 1 FROM handles LIMIT 1")
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the registry at {self.path}: {exc} (run `idnode init` first)"
            ) from exc
        self._db = db

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("store is not open")
        return self._db

    async def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One writer transaction: BEGIN IMMEDIATE takes the write lock first, so a
        read-modify-write inside it is atomic. The block's end commits; an exception
        rolls everything back and is raised again. A COMMIT that fails is rolled back
        too, so a write reported failed never landed and none is left half done.

        Nothing inside may await: the connection is shared by the event loop's tasks."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # some errors end the transaction themselves
                db.execute("ROLLBACK")
            raise

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = list(keys[i : i + _CHUNK])
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT handle, vals FROM handles WHERE handle IN ({marks})"
            for handle, vals in self.db.execute(sql, chunk):
                out[handle] = bytes(vals)
        return out

    async def put_many(self, records: Sequence[HandleRecord]) -> int:
        rows = self._rows(records)
        t = now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)"
                " ON CONFLICT (handle) DO UPDATE SET display = excluded.display,"
                " vals = excluded.vals, version = handles.version + 1,"
                " updated_at = excluded.updated_at",
                [(*r, t, t) for r in rows],
            )
            if self.search_index:
                sqlite_sync(db, [(r[0], r[3]) for r in rows])
        return len(rows)

    async def home_prefix(self, prefix: str, owner: str = "") -> None:
        self.db.execute(
            "INSERT INTO prefixes (prefix, display, owner, status, created_at)"
            " VALUES (?, ?, ?, 'homed', ?) ON CONFLICT (prefix) DO UPDATE SET status = 'homed',"
            " owner = excluded.owner",
            (self.key(prefix), prefix, owner, now()),
        )

    async def homed_prefixes(self) -> list[str]:
        rows = self.db.execute("SELECT display FROM prefixes WHERE status = 'homed'")
        return [r[0] for r in rows]

    async def count_prefix(self, prefix: str) -> int:
        (n,) = self.db.execute(
            "SELECT count(*) FROM handles WHERE handle >= ? AND handle < ?",
            key_range(self.key(prefix)),
        ).fetchone()
        return int(n)

    async def count_handles(self) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM handles").fetchone()
        return int(n)

    async def mutate(
        self, handle: str, fn: Mutator, *, actor: str, op: str, read: bytes | Unread | None = UNREAD
    ) -> Outcome:
        # ``read`` is not used: here the decision is made under the write lock.
        key = self.key(handle)
        before: bytes | None = None
        try:
            with self.transaction() as db:  # the write lock first: read-modify-write is atomic
                row = db.execute("SELECT vals FROM handles WHERE handle = ?", (key,)).fetchone()
                before = bytes(row[0]) if row else None
                o = fn(before)
                t = now()
                if isinstance(o.new, Keep):
                    pass
                elif o.new is None:
                    db.execute("DELETE FROM handles WHERE handle = ?", (key,))
                elif before is None:
                    db.execute(
                        "INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
                        " updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                        (key, handle, self.key(storage_prefix(handle)), o.new, t, t),
                    )
                else:
                    db.execute(
                        "UPDATE handles SET vals = ?, version = version + 1, updated_at = ?"
                        " WHERE handle = ?",
                        (o.new, t, key),
                    )
                if self.search_index and not isinstance(o.new, Keep):
                    sqlite_sync(db, [(key, o.new)])  # as PostgreSQL's: delete first
                self._insert_audit(self._audit_row(before, o, actor, op, handle))
        except Refusal as exc:
            # Rolled back by now: the refusal is all that is recorded.
            await self._refused(exc, before, actor, op, handle)
            raise
        return o

    def _insert_audit(self, e: AuditEntry) -> None:
        self.db.execute(
            "INSERT INTO audit_log (at, actor, op, handle, rc, before_sha256, after_sha256,"
            " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            e.row(),
        )

    async def append_audit(self, entry: AuditEntry) -> None:
        self._insert_audit(entry)

    async def audit_for(self, handle: str, limit: int = 100) -> list[AuditEntry]:
        rows = self.db.execute(
            "SELECT at, actor, op, handle, rc, before_sha256, after_sha256, detail"
            " FROM audit_log WHERE handle = ? ORDER BY id DESC LIMIT ?",
            (self.key(handle), limit),
        )
        return [AuditEntry(*r) for r in rows]

    async def list_handles(self, prefix: str, limit: int = 100_000, after: str = "") -> list[str]:
        rows = self.db.execute(
            "SELECT display FROM handles WHERE handle >= ? AND handle < ? AND handle > ?"
            " ORDER BY handle LIMIT ?",
            (*key_range(self.key(prefix)), self.key(after) if after else "", limit),
        )
        return [r[0] for r in rows]

    async def prefix_records(self, limit: int = 100_000) -> list[tuple[str, bytes]]:
        rows = self.db.execute(
            "SELECT display, vals FROM handles WHERE handle >= ? AND handle < ?"
            " ORDER BY handle LIMIT ?",
            (*key_range(self.key(NA_PREFIX[:-1])), limit),
        )
        return [(r[0], bytes(r[1])) for r in rows]

    async def unhome_prefix(self, prefix: str) -> bool:
        cur = self.db.execute(
            "UPDATE prefixes SET status = 'unhomed' WHERE prefix = ? AND status = 'homed'",
            (self.key(prefix),),
        )
        return cur.rowcount > 0

    async def create_many(
        self, records: Sequence[HandleRecord], *, actor: str, op: str, replace: bool = False
    ) -> dict[str, tuple[int, str]]:
        rows = self._rows(records)
        by_key = {r[0]: r for r in rows}
        t = now()
        with self.transaction() as db:
            existing: dict[str, bytes] = {}
            keys = [r[0] for r in rows]
            for i in range(0, len(keys), _CHUNK):
                chunk = keys[i : i + _CHUNK]
                marks = ",".join("?" * len(chunk))
                sql = f"SELECT handle, vals FROM handles WHERE handle IN ({marks})"
                existing.update((h, bytes(v)) for h, v in db.execute(sql, chunk))
            inserts, updates, results = self._batch_decisions(rows, existing, replace)
            db.executemany(
                "INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                [(*r, t, t) for r in inserts],
            )
            db.executemany(
                "UPDATE handles SET display = ?, vals = ?, version = version + 1,"
                " updated_at = ? WHERE handle = ?",
                [(r[1], r[3], t, r[0]) for r in updates],
            )
            if self.search_index:
                sqlite_sync(db, [(r[0], r[3]) for r in updates], [(r[0], r[3]) for r in inserts])
            db.executemany(
                "INSERT INTO audit_log (at, actor, op, handle, rc, before_sha256, after_sha256,"
                " detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        t,
                        actor,
                        op,
                        k,
                        rc,
                        sha256_hex(existing.get(k)),
                        sha256_hex(by_key[k][3] if rc == ResponseCode.SUCCESS else existing.get(k)),
                        msg,
                    )
                    for k, (rc, msg) in results.items()
                    if msg != REGISTERED_ALREADY  # a no-op retry is not audited
                ],
            )
        return results

    async def put_template(self, prefix: str, version: str, document: str, actor: str) -> bool:
        cur = self.db.execute(
            "INSERT INTO templates (prefix, version, document, created_at, created_by)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prefix, version) DO NOTHING",
            (self.key(prefix), version, document, now(), actor),
        )
        return cur.rowcount == 1

    async def templates(self, prefix: str) -> list[tuple[str, str]]:
        rows = self.db.execute(
            "SELECT version, document FROM templates WHERE prefix = ? ORDER BY created_at, rowid",
            (self.key(prefix),),
        )
        return [(r[0], r[1]) for r in rows]

    async def append_invalidations(self, keys: Sequence[str]) -> int:
        t = now()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO invalidations (handle, at) VALUES (?, ?)", [(k, t) for k in keys]
            )
            (newest,) = db.execute("SELECT max(id) FROM invalidations").fetchone()
            if feed_prune_due(int(newest or 0), len(keys)):
                db.execute("DELETE FROM invalidations WHERE at < ?", (t - FEED_KEEP_SECONDS,))
        return int(newest or 0)

    async def invalidations_since(self, after: int) -> list[tuple[int, str]]:
        rows = self.db.execute(
            "SELECT id, handle FROM invalidations WHERE id > ? ORDER BY id", (after,)
        )
        return [(int(r[0]), r[1]) for r in rows]

    async def newest_invalidation(self) -> int:
        (newest,) = self.db.execute("SELECT max(id) FROM invalidations").fetchone()
        return int(newest or 0)

    async def session_challenge(
        self,
        sid: int,
        nonce: bytes,
        digest: bytes,
        request: bytes,
        challenge_expires: float,
        expires: float,
        *,
        new: bool,
        client: str = "",
    ) -> bool:
        if new:
            cur = self.db.execute(
                "INSERT INTO sessions (id, nonce, digest, request, challenge_expires, expires,"
                " client) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (sid, nonce, digest, request, challenge_expires, expires, client),
            )
        else:
            cur = self.db.execute(
                "UPDATE sessions SET nonce = ?, digest = ?, request = ?, challenge_expires = ?,"
                " expires = max(expires, ?) WHERE id = ?",
                (nonce, digest, request, challenge_expires, expires, sid),
            )
        return cur.rowcount == 1

    async def session_take(self, sid: int, now: float) -> tuple[bytes, bytes, bytes] | None:
        with self.transaction() as db:
            row = db.execute(
                "SELECT nonce, digest, request, challenge_expires, mode FROM sessions WHERE id = ?",
                (sid,),
            ).fetchone()
            if row is not None and row[4] == 0:
                db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            else:
                db.execute(
                    "UPDATE sessions SET nonce = NULL, digest = NULL, request = NULL WHERE id = ?",
                    (sid,),
                )
        if row is None or row[0] is None or row[3] < now:
            return None
        return bytes(row[0]), bytes(row[1]), bytes(row[2])

    async def session_lookup(self, sid: int, now: float) -> tuple[SessionRow | None, bool]:
        row = self.db.execute(
            f"SELECT {SESSION_COLUMNS}, nonce IS NOT NULL AND challenge_expires >= ?"
            " FROM sessions WHERE id = ?",
            (now, sid),
        ).fetchone()
        if row is None:
            return None, False
        keyed = row[1] != 0 and row[11] >= now
        return (session_row(tuple(row)) if keyed else None), bool(row[13])

    async def session_open(self, sid: int, s: NewSession, expires: float) -> bool:
        claimed = s.claimed or (None, None)
        cur = self.db.execute(
            "INSERT INTO sessions (id, mode, cipher, key_sealed, claimed_handle, claimed_index,"
            " major, minor, idle_timeout, expires, client) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                sid,
                s.mode,
                s.cipher,
                s.key_sealed,
                claimed[0],
                claimed[1],
                s.major,
                s.minor,
                s.idle_timeout,
                expires,
                s.client,
            ),
        )
        return cur.rowcount == 1

    async def session_set_key(self, sid: int, cipher: int, key_sealed: bytes) -> bool:
        cur = self.db.execute(
            "UPDATE sessions SET cipher = ?, key_sealed = ? WHERE id = ? AND mode <> 0"
            " AND key_sealed IS NULL",
            (cipher, key_sealed, sid),
        )
        return cur.rowcount == 1

    async def session_authenticate(self, sid: int, handle: str, index: int, expires: float) -> None:
        self.db.execute(
            "UPDATE sessions SET identity_handle = ?, identity_index = ?, expires = ? WHERE id = ?",
            (handle, index, expires, sid),
        )

    async def session_use(
        self, sid: int, mac: bytes, mac_expires: float, now: float, expires: float
    ) -> ReplayCheck:
        with self.transaction() as db:
            row = db.execute(
                "SELECT 1 FROM sessions WHERE id = ? AND mode <> 0 AND expires >= ?", (sid, now)
            ).fetchone()
            if row is None:
                return ReplayCheck(False, gone=True)
            cur = db.execute(
                "INSERT INTO session_replays (session_id, mac, expires) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING",
                (sid, mac, mac_expires),
            )
            if cur.rowcount != 1:
                return ReplayCheck(False)
            db.execute("UPDATE sessions SET expires = ? WHERE id = ?", (expires, sid))
        return ReplayCheck(True)

    async def session_next_counter(self, sid: int) -> int | None:
        row = self.db.execute(
            "UPDATE sessions SET server_counter = server_counter + 1 WHERE id = ?"
            " RETURNING server_counter",
            (sid,),
        ).fetchone()
        return None if row is None else int(row[0])

    async def session_close(self, sid: int) -> bool:
        with self.transaction() as db:
            cur = db.execute("DELETE FROM sessions WHERE id = ?", (sid,))
            db.execute("DELETE FROM session_replays WHERE session_id = ?", (sid,))
        return cur.rowcount == 1

    async def sessions_reap(self, now: float) -> int:
        with self.transaction() as db:
            cur = db.execute("DELETE FROM sessions WHERE expires < ?", (now,))
            # A live session's unanswered challenge: its request goes, the session stays.
            stale = db.execute(
                "UPDATE sessions SET nonce = NULL, digest = NULL, request = NULL"
                " WHERE request IS NOT NULL AND challenge_expires < ?",
                (now,),
            )
            db.execute(
                "DELETE FROM session_replays WHERE expires < ?"
                " OR session_id NOT IN (SELECT id FROM sessions)",
                (now,),
            )
        return int(cur.rowcount) + int(stale.rowcount)

    async def sessions_open_by(self, client: str, now: float) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM sessions WHERE client = ? AND expires >= ?", (client, now)
        ).fetchone()
        return int(row[0])

    async def sessions_count(self, now: float, limit: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM sessions WHERE expires >= ? LIMIT ?)",
            (now, limit),
        ).fetchone()
        return int(row[0])

    async def sessions_held_by(self, client: str, now: float) -> tuple[int, int]:
        # length() of a blob reads its size from the record header, not its pages.
        row = self.db.execute(
            "SELECT coalesce(sum(expires >= ?), 0), coalesce(sum(length(request)), 0)"
            " FROM sessions WHERE client = ?",
            (now, client),
        ).fetchone()
        return int(row[0]), int(row[1])

    async def challenge_bytes(self) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(length(request)), 0) FROM sessions WHERE request IS NOT NULL"
        ).fetchone()
        return int(row[0])

    async def server_key(self) -> tuple[str, bytes, bytes] | None:
        row = self.db.execute(
            "SELECT algorithm, private_sealed, public_key FROM server_keys WHERE active"
            " ORDER BY id DESC LIMIT 1"
        ).fetchone()
        return None if row is None else (row[0], bytes(row[1]), bytes(row[2]))

    async def put_server_key(self, algorithm: str, private_sealed: bytes, public: bytes) -> None:
        with self.transaction() as db:
            db.execute("UPDATE server_keys SET active = 0")
            db.execute(
                "INSERT INTO server_keys (algorithm, private_sealed, public_key, created_at,"
                " active)"
                " VALUES (?, ?, ?, ?, 1)",
                (algorithm, private_sealed, public, now()),
            )

    async def add_api_key(self, key_sha256: str, handle: str, index: int, label: str) -> None:
        self.db.execute(
            "INSERT INTO api_keys (key_sha256, identity_handle, identity_index, label,"
            " created_at) VALUES (?, ?, ?, ?, ?)",
            (key_sha256, handle, index, label, now()),
        )

    async def api_key(self, key_sha256: str) -> tuple[str, int] | None:
        row = self.db.execute(
            "SELECT identity_handle, identity_index FROM api_keys WHERE key_sha256 = ?",
            (key_sha256,),
        ).fetchone()
        return None if row is None else (row[0], int(row[1]))

    async def api_keys(self) -> list[tuple[str, str, int, str, int]]:
        rows = self.db.execute(
            "SELECT key_sha256, identity_handle, identity_index, label, created_at"
            " FROM api_keys ORDER BY created_at, key_sha256"
        ).fetchall()
        return [(r[0], r[1], int(r[2]), r[3], int(r[4])) for r in rows]

    async def delete_api_key(self, key_sha256: str) -> bool:
        cur = self.db.execute("DELETE FROM api_keys WHERE key_sha256 = ?", (key_sha256,))
        return cur.rowcount > 0

    async def node_key_check(self) -> bytes | None:
        try:
            row = self.db.execute("SELECT sealed FROM node_key_check WHERE id = 1").fetchone()
        except sqlite3.OperationalError as exc:  # no such table: a schema before 0010
            raise StoreError(f"{exc}: run `idnode init` to upgrade the registry") from None
        return None if row is None else bytes(row[0])

    async def put_node_key_check(self, sealed: bytes) -> None:
        self.db.execute(
            "INSERT INTO node_key_check (id, sealed, created_at) VALUES (1, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (sealed, now()),
        )

    async def rest_session_create(
        self, id_sha256: str, nonce: bytes, expires: float, now: float
    ) -> None:
        self.db.execute("DELETE FROM rest_sessions WHERE expires < ?", (now,))
        self.db.execute(
            "INSERT INTO rest_sessions (id_sha256, nonce, expires) VALUES (?, ?, ?)",
            (id_sha256, nonce, expires),
        )

    async def rest_session_get(
        self, id_sha256: str, now: float, extend_to: float
    ) -> tuple[bytes, str | None, int | None] | None:
        rows = self.db.execute(
            "UPDATE rest_sessions SET expires = CASE WHEN identity_handle IS NULL THEN expires"
            " ELSE ? END WHERE id_sha256 = ? AND expires >= ?"
            " RETURNING nonce, identity_handle, identity_index",
            (extend_to, id_sha256, now),
        ).fetchall()  # fetch all: an unfinished statement would keep the write lock
        if not rows:
            return None
        nonce, handle, index = rows[0]
        return bytes(nonce), handle, None if index is None else int(index)

    async def rest_session_swap_nonce(
        self, id_sha256: str, nonce: bytes, now: float, extend_to: float
    ) -> bytes | None:
        with self.transaction() as db:  # the write lock first: one swap per nonce
            row = db.execute(
                "SELECT nonce FROM rest_sessions WHERE id_sha256 = ? AND expires >= ?",
                (id_sha256, now),
            ).fetchone()
            if row is not None:
                db.execute(
                    "UPDATE rest_sessions SET nonce = ?, expires = CASE WHEN identity_handle"
                    " IS NULL THEN expires ELSE ? END WHERE id_sha256 = ?",
                    (nonce, extend_to, id_sha256),
                )
        return None if row is None else bytes(row[0])

    async def rest_session_authenticate(
        self, id_sha256: str, handle: str, index: int, expires: float
    ) -> None:
        self.db.execute(
            "UPDATE rest_sessions SET identity_handle = ?, identity_index = ?, expires = ?"
            " WHERE id_sha256 = ?",
            (handle, index, expires, id_sha256),
        )

    async def rest_sessions_count(self, now: float, limit: int) -> int:
        row = self.db.execute(
            "SELECT count(*) FROM (SELECT 1 FROM rest_sessions WHERE expires >= ? LIMIT ?)",
            (now, limit),
        ).fetchone()
        return int(row[0])

    async def rest_session_delete(self, id_sha256: str, now: float) -> bool:
        cur = self.db.execute(
            "DELETE FROM rest_sessions WHERE id_sha256 = ? AND expires >= ?", (id_sha256, now)
        )
        return cur.rowcount == 1

    # --- prefix lifecycle (0011) -----------------------------------------------------

    async def add_prefix_application(
        self,
        prefix: str,
        mode: str,
        admin_kind: str,
        admin_key: bytes,
        site: bytes | None,
        contact: str,
        applicant: str,
        *,
        max_pending: int = 1000,
        source: str = "",
        max_per_source: int = 0,
    ) -> int | None:
        key = self.key(prefix)
        source = source[:64]
        with self.transaction() as db:  # the write lock first: one open application
            taken = db.execute(
                "SELECT 1 FROM prefix_applications WHERE prefix = ?"
                " AND status IN ('pending', 'approved')",
                (key,),
            ).fetchone()
            (waiting,) = db.execute(
                "SELECT count(*) FROM prefix_applications WHERE status = 'pending'"
            ).fetchone()
            if taken is not None or int(waiting) >= max_pending:
                return None
            if max_per_source > 0:
                (theirs,) = db.execute(
                    "SELECT count(*) FROM prefix_applications WHERE source = ?"
                    " AND status = 'pending'",
                    (source,),
                ).fetchone()
                if int(theirs) >= max_per_source:
                    return None
            cur = db.execute(
                "INSERT INTO prefix_applications (prefix, display, mode, status, admin_kind,"
                " admin_key, site, contact, applicant, created_at, source)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (key, prefix, mode, admin_kind, admin_key, site, contact, applicant, now(), source),
            )
        return int(cur.lastrowid or 0)

    async def prefix_application(self, app_id: int) -> ApplicationRow | None:
        row = self.db.execute(
            f"SELECT {APPLICATION_COLUMNS} FROM prefix_applications WHERE id = ?", (app_id,)
        ).fetchone()
        return None if row is None else application_row(row)

    async def prefix_applications(
        self, status: str | None = None, limit: int = 1000, *, after: int | None = None
    ) -> list[ApplicationRow]:
        rows = self.db.execute(
            f"SELECT {APPLICATION_COLUMNS} FROM prefix_applications"
            " WHERE (? IS NULL OR status = ?) AND (? IS NULL OR id < ?)"
            " ORDER BY id DESC LIMIT ?",
            (status, status, after, after, limit),
        )
        return [application_row(r) for r in rows.fetchall()]

    async def expire_prefix_applications(self, created_before: int, reason: str) -> int:
        cur = self.db.execute(
            "UPDATE prefix_applications SET status = 'rejected', decided_by = 'node',"
            " reason = ?, decided_at = ? WHERE status = 'pending' AND created_at < ?",
            (reason, now(), created_before),
        )
        return int(cur.rowcount)

    async def decide_prefix_application(
        self, app_id: int, status: str, decided_by: str, reason: str, upward: str = ""
    ) -> bool:
        cur = self.db.execute(
            "UPDATE prefix_applications SET status = ?, decided_by = ?, reason = ?,"
            " decided_at = ?, upward = ? WHERE id = ? AND status = 'pending'",
            (status, decided_by, reason, now(), upward, app_id),
        )
        return cur.rowcount == 1

    async def set_prefix_upward(
        self, app_id: int, upward: str, error: str, attempts: int, next_at: float
    ) -> None:
        self.db.execute(
            "UPDATE prefix_applications SET upward = ?, upward_error = ?, upward_attempts = ?,"
            " upward_next_at = ? WHERE id = ?",
            (upward, error, attempts, next_at, app_id),
        )

    async def claim_prefix_upward(
        self, now: float, lease: float, limit: int = 100
    ) -> list[ApplicationRow]:
        rows = self.db.execute(
            "UPDATE prefix_applications SET upward_next_at = ? WHERE id IN (SELECT id FROM"
            " prefix_applications WHERE upward = 'queued' AND upward_next_at <= ?"
            f" ORDER BY id LIMIT ?) RETURNING {APPLICATION_COLUMNS}",
            (now + lease, now, limit),
        ).fetchall()  # fetch all: an unfinished statement would keep the write lock
        return sorted((application_row(r) for r in rows), key=lambda a: a.id)

    async def suspend_prefix(self, prefix: str, reason: str, by: str) -> bool:
        cur = self.db.execute(
            "INSERT INTO prefix_suspensions (prefix, display, reason, suspended_by, at)"
            " VALUES (?, ?, ?, ?, ?) ON CONFLICT (prefix) DO NOTHING",
            (self.key(prefix), prefix, reason, by, now()),
        )
        return cur.rowcount == 1

    async def resume_prefix(self, prefix: str) -> bool:
        cur = self.db.execute(
            "DELETE FROM prefix_suspensions WHERE prefix = ?", (self.key(prefix),)
        )
        return cur.rowcount == 1

    async def suspended_prefixes(self) -> list[tuple[str, str]]:
        rows = self.db.execute("SELECT display, reason FROM prefix_suspensions ORDER BY prefix")
        return [(r[0], r[1]) for r in rows]

    # --- statistics (0012) -------------------------------------------------------------

    async def add_statistics(self, day: str, counts: Sequence[Counts]) -> None:
        rows = [c for c in counts if c[1] or c[2] or c[3]]
        for i in range(0, len(rows), _CHUNK):  # one statement unless past 500 prefixes
            part = rows[i : i + _CHUNK]
            self.db.execute(
                "INSERT INTO statistics (prefix, day, registrations, resolutions, errors, seq)"
                " VALUES " + ", ".join(["(?, ?, ?, ?, ?, 1)"] * len(part)) + " ON CONFLICT"
                " (prefix, day) DO UPDATE SET"
                " registrations = statistics.registrations + excluded.registrations,"
                " resolutions = statistics.resolutions + excluded.resolutions,"
                " errors = statistics.errors + excluded.errors, seq = statistics.seq + 1",
                [x for p, g, r, e in part for x in (p, day, g, r, e)],
            )

    async def statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[StatisticsRow]:
        rows = self.db.execute(
            f"SELECT {STATISTICS_COLUMNS} FROM statistics WHERE (? IS NULL OR prefix = ?)"
            " AND day >= ? AND day <= ? ORDER BY day, prefix",
            (prefix, prefix, since, until),
        ).fetchall()
        return [statistics_row(r) for r in rows]

    async def claim_statistics(
        self, now: float, lease: float, limit: int = 500
    ) -> list[StatisticsRow]:
        rows = self.db.execute(
            "UPDATE statistics SET next_at = ? WHERE rowid IN (SELECT rowid FROM statistics"
            " WHERE seq > sent_seq AND next_at <= ? ORDER BY day, prefix LIMIT ?)"
            f" RETURNING {STATISTICS_COLUMNS}",
            (now + lease, now, limit),
        ).fetchall()  # fetch all: an unfinished statement would keep the write lock
        return sorted((statistics_row(r) for r in rows), key=lambda r: (r.day, r.prefix))

    async def statistics_sent(self, acked: Sequence[tuple[str, str, int]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE statistics SET sent_seq = max(sent_seq, ?), attempts = 0, next_at = 0,"
                " error = '' WHERE prefix = ? AND day = ?",
                [(seq, prefix, day) for prefix, day, seq in acked],
            )

    async def statistics_failed(
        self, rows: Sequence[tuple[str, str]], error: str, next_at: float
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "UPDATE statistics SET attempts = attempts + 1, next_at = ?, error = ?"
                " WHERE prefix = ? AND day = ?",
                [(next_at, error, prefix, day) for prefix, day in rows],
            )

    async def statistics_pending(self) -> int:
        (n,) = self.db.execute("SELECT count(*) FROM statistics WHERE seq > sent_seq").fetchone()
        return int(n)

    async def statistics_node(self) -> str:
        row = self.db.execute("SELECT node FROM statistics_source WHERE id = 1").fetchone()
        if row is None:
            raise StoreError("no statistics_source row: run idnode init to upgrade the registry")
        return str(row[0])

    async def receive_statistics(
        self, sender: str, node: str, reports: Sequence[ReceivedRow]
    ) -> None:
        at = now()
        for i in range(0, len(reports), _CHUNK // 2):
            part = reports[i : i + _CHUNK // 2]
            self.db.execute(
                "INSERT INTO statistics_received (node, prefix, day, display, sender,"
                " registrations, resolutions, errors, seq, received_at) VALUES "
                + ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(part))
                + " ON CONFLICT (node, prefix, day) DO UPDATE SET display = excluded.display,"
                " sender = excluded.sender, registrations = excluded.registrations,"
                " resolutions = excluded.resolutions, errors = excluded.errors,"
                " seq = excluded.seq, received_at = excluded.received_at"
                " WHERE excluded.seq > statistics_received.seq",
                [
                    x
                    for r in part
                    for x in (
                        node,
                        self.key(r.prefix),
                        r.day,
                        r.prefix,
                        sender,
                        r.registrations,
                        r.resolutions,
                        r.errors,
                        r.seq,
                        at,
                    )
                ],
            )

    async def received_statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[ReceivedRow]:
        key = None if prefix is None else self.key(prefix)
        rows = self.db.execute(
            f"SELECT {RECEIVED_COLUMNS} FROM statistics_received WHERE (? IS NULL OR prefix = ?)"
            " AND day >= ? AND day <= ? ORDER BY day, prefix, node",
            (key, key, since, until),
        ).fetchall()
        return [received_row(r) for r in rows]
