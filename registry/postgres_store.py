"""The PostgreSQL store, through asyncpg.

Hot reads skip SQLAlchemy: Core async measured at about half the throughput of
raw asyncpg here. asyncpg prepares and caches each statement per connection, and
a batch of misses is one query: the keys unnested and joined to handles (measured
~44-94k keys/s in batches of 100, against ~19k/s for point selects). A batch of one
key, as most are under a light load, is a point select (GET_ONE): half the server's
CPU of the join for it; on a hash-partitioned table its generic plan prunes to the
key's partition at run time.

Why a join and not ``WHERE handle = ANY($1)``: both are equally fast on a plain table
(86k keys/s at 10M here), but on a hash-partitioned table ``ANY`` probes every
partition's index with every key (16 partitions: 14.8k keys/s), while the join's
nested loop prunes to one partition per key (79k keys/s).

With read replicas (``read_urls``) the batched lookups (``get_many``) go to streaming
replicas whenever they have replayed what each key needs, and to the primary otherwise
(registry/replicas.py says when); everything else is read and written on the primary.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress

import asyncpg
from prometheus_client import Counter

from idnode.resolver.codec.codes import ResponseCode

from .names import NA_PREFIX, key_range, storage_prefix
from .pg_pool import ConnectionPool
from .replicas import QUERY_TIMEOUT, Observer, Replica, ReplicaSet, lsn, lsn_text
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
    CommitUnknown,
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
    redact_url,
    session_row,
    sha256_hex,
    statistics_row,
)
from .value_index import pg_sync

log = logging.getLogger("idnode.registry.postgres_store")

# A batch replacement's compare-and-set rounds before the rows still changing under it
# are locked one at a time (see PostgresStore._replace).
CAS_ROUNDS = 3
DEADLOCK_ATTEMPTS = 3  # a batch the server rolled back in a deadlock is run again
CAS_RETRIES = Counter(
    "idnode_batch_replace_retries_total",
    "Rows of a batch replacement another write changed between their read and the "
    "update: read again and decided again",
)

GET_MANY = (
    "SELECT h.handle, h.vals FROM unnest($1::text[]) AS k(key) JOIN handles h ON h.handle = k.key"
)
# One key, as most batches of a lightly loaded node are: half of GET_MANY's PostgreSQL
# CPU for one key (70 against 140-158 us), ~20% less client CPU and ~45% less wall time,
# measured on a 10M registry (the array, the function scan and the join all go).
GET_ONE = "SELECT handle, vals FROM handles WHERE handle = $1"
PUT_MANY = """
INSERT INTO handles (handle, display, prefix, vals, version, created_at, updated_at)
SELECT h, d, p, v, 1, $5, $5 FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[])
    AS t(h, d, p, v)
ON CONFLICT (handle) DO UPDATE SET display = EXCLUDED.display, vals = EXCLUDED.vals,
    version = handles.version + 1, updated_at = EXCLUDED.updated_at
"""


# The connection went away (as opposed to the server answering with an error): asyncpg
# says InternalClientError when the server's goodbye arrived just before a statement was
# sent, InterfaceError when the connection was already closed, OSError when it was reset.
_CONNECTION_LOST = (
    asyncpg.PostgresConnectionError,
    asyncpg.AdminShutdownError,
    asyncpg.CrashShutdownError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)


STANDBY_REFUSED = (
    "database_url is a read replica (pg_is_in_recovery() is true at {url}): writes and "
    "sessions need the primary; give the primary as --database-url and the replica as "
    "--database-read-url"
)


async def _fetch_keys(c: asyncpg.Connection, keys: Sequence[str]) -> list[asyncpg.Record]:
    """The (handle, vals) rows of the keys found."""
    if len(keys) == 1:
        return await c.fetch(GET_ONE, keys[0])  # type: ignore[no-any-return]
    return await c.fetch(GET_MANY, list(keys))  # type: ignore[no-any-return]


class PostgresStore(Store):
    def __init__(
        self,
        url: str,
        case_sensitive: bool = False,
        pool_size: int = 4,
        *,
        read_urls: Sequence[str] = (),
        replica_max_lag: float = 5.0,
        replica_observer: Observer | None = None,
    ) -> None:
        super().__init__(url, case_sensitive)
        self.pool_size = pool_size
        # --search-index: every write keeps search_values in step (registry/value_index.py)
        self.search_index = False
        self._pool: ConnectionPool | None = None
        self.replicas: ReplicaSet | None = None
        if read_urls:
            self.replicas = ReplicaSet(
                read_urls,
                self._primary_position,
                max_lag=replica_max_lag,
                pool_size=pool_size,
                observer=replica_observer,
            )

    async def open(self) -> None:
        try:
            self._pool = ConnectionPool(self._connect, self.pool_size)
            await self._pool.open(min_size=1)
            async with self._pool.acquire() as c:
                standby = await c.fetchval("SELECT pg_is_in_recovery()")
                if not standby:
                    await c.fetchval("SELECT 1 FROM handles LIMIT 1")
        except (OSError, asyncpg.PostgresError) as exc:
            await self.close()
            raise StoreError(
                f"cannot open the registry at {redact_url(self.url)}: {exc}"
                " (run `idnode init` first?)"
            ) from exc
        if standby:
            # Its reads would work and every write fail (REST 500, Handle writes
            # unanswered): refuse at once, naming the fix.
            await self.close()
            raise StoreError(STANDBY_REFUSED.format(url=redact_url(self.url)))
        if self.replicas is not None:
            try:
                await self.replicas.open()
            except (OSError, asyncpg.PostgresError) as exc:
                await self.close()
                raise StoreError(f"cannot set up the read replicas: {exc}") from exc

    async def _connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.url, command_timeout=30)

    @property
    def read_concurrency(self) -> int:
        # one query per pooled connection, the replicas' included
        return self.pool_size * (1 + (len(self.replicas.replicas) if self.replicas else 0))

    @property
    def pool(self) -> ConnectionPool:
        if self._pool is None:
            raise StoreError("store is not open")
        return self._pool

    async def close(self) -> None:
        if self.replicas is not None:
            await self.replicas.close()
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside one transaction: the block's end commits; an
        exception rolls everything back and is raised again, and so does a COMMIT the
        server refuses. A connection lost during COMMIT leaves the outcome unknown: that
        is CommitUnknown, which the doors report as neither failure nor success."""
        async with self.pool.acquire() as c:
            tx = c.transaction()
            await tx.start()
            try:
                yield c
            except BaseException:
                with suppress(Exception):  # a connection that is gone rolled back itself
                    await tx.rollback()
                raise
            try:
                await tx.commit()
            except _CONNECTION_LOST as exc:
                raise CommitUnknown(f"the connection went away during COMMIT ({exc})") from exc

    @asynccontextmanager
    async def autocommit(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection for a write of one statement, which commits on its own. A
        connection lost while the statement runs leaves its outcome unknown (the server
        may have committed before the answer was lost): CommitUnknown, as for a
        transaction's COMMIT. An error the server answers with stays that error."""
        async with self.pool.acquire() as c:
            try:
                yield c
            except _CONNECTION_LOST as exc:
                raise CommitUnknown(f"the connection went away during a write ({exc})") from exc
            except TimeoutError as exc:
                # asyncpg's command timeout cancels the statement from the client side:
                # the server may have committed it before the cancel arrived
                raise CommitUnknown("no answer to a write within its timeout") from exc

    async def _primary_position(self) -> int:
        async with self.pool.acquire() as c:
            # The insert pointer, not pg_current_wal_lsn() (the write pointer): with
            # synchronous_commit off a commit record just made may lie past the latter,
            # and a replica held to it could still lack the write.
            return lsn(await c.fetchval("SELECT pg_current_wal_insert_lsn()::text"))

    async def write_position(self) -> str:
        """The primary's WAL position, read after the commit. Given with or without
        replicas here: another node sharing this registry may have some."""
        try:
            return lsn_text(await self._primary_position())
        except Exception:
            if self.replicas is not None:
                self.replicas.unknown_write()  # the write committed, its position unread
            raise

    def heard_write(self, keys: Sequence[str], position: str) -> None:
        if self.replicas is None:
            return
        try:
            at = lsn(position)
        except ValueError:
            at = 0
        if at == 0:
            # No position, or not one this code writes: where the write stands is not
            # known, so nothing is read on a replica until the primary's is read again.
            self.replicas.unpositioned_write(position)
            return
        self.replicas.requirements.require(keys, at)

    def hold_replicas(self, held: bool) -> None:
        if self.replicas is not None:
            self.replicas.hold(held)

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        if self.replicas is None:
            return await self._get_many_primary(keys)
        parts = self.replicas.plan(keys)
        if len(parts) == 1:
            return await self._get_many_at(*parts[0])
        found: dict[str, bytes] = {}
        for part in await asyncio.gather(*(self._get_many_at(r, ks) for r, ks in parts)):
            found.update(part)
        return found

    async def _get_many_primary(self, keys: Sequence[str]) -> dict[str, bytes]:
        async with self.pool.acquire() as c:
            rows = await _fetch_keys(c, keys)
        return {r[0]: r[1] for r in rows}

    async def _get_many_at(self, replica: Replica | None, keys: list[str]) -> dict[str, bytes]:
        """One query on ``replica`` (None: the primary); a replica that fails or is slow
        is skipped from now on and its keys are read on the primary instead."""
        assert self.replicas is not None
        if replica is not None and replica.pool is not None:
            try:
                async with asyncio.timeout(QUERY_TIMEOUT):
                    async with replica.pool.acquire() as c:
                        rows = await _fetch_keys(c, keys)
            except Exception as exc:
                self.replicas.failed(replica, exc)
            else:
                replica.keys_read += len(keys)
                return {r[0]: r[1] for r in rows}
        self.replicas.primary_keys_read += len(keys)
        return await self._get_many_primary(keys)

    async def put_many(self, records: Sequence[HandleRecord]) -> int:
        rows = self._rows(records)
        if not rows:
            return 0
        cols = list(zip(*rows, strict=True))
        async with self.transaction() if self.search_index else self.autocommit() as c:
            await c.execute(
                PUT_MANY, list(cols[0]), list(cols[1]), list(cols[2]), list(cols[3]), now()
            )
            if self.search_index:
                await pg_sync(c, [(r[0], r[3]) for r in rows])
        return len(rows)

    async def home_prefix(self, prefix: str, owner: str = "") -> None:
        async with self.autocommit() as c:
            await c.execute(
                "INSERT INTO prefixes (prefix, display, owner, status, created_at)"
                " VALUES ($1, $2, $3, 'homed', $4) ON CONFLICT (prefix) DO UPDATE"
                " SET status = 'homed', owner = EXCLUDED.owner",
                self.key(prefix),
                prefix,
                owner,
                now(),
            )

    async def homed_prefixes(self) -> list[str]:
        async with self.pool.acquire() as c:
            rows = await c.fetch("SELECT display FROM prefixes WHERE status = 'homed'")
        return [r[0] for r in rows]

    async def count_prefix(self, prefix: str) -> int:
        async with self.pool.acquire() as c:
            return int(
                await c.fetchval(
                    "SELECT count(*) FROM handles WHERE handle >= $1 AND handle < $2",
                    *key_range(self.key(prefix)),
                )
            )

    async def count_handles(self) -> int:
        async with self.pool.acquire() as c:
            return int(await c.fetchval("SELECT count(*) FROM handles"))

    async def mutate(
        self, handle: str, fn: Mutator, *, actor: str, op: str, read: bytes | Unread | None = UNREAD
    ) -> Outcome:
        if not self.search_index:
            done = await self._mutate_by_compare(handle, fn, actor=actor, op=op, read=read)
            if done is not None:
                return done
        return await self._mutate_locked(handle, fn, actor=actor, op=op)

    async def _mutate_by_compare(
        self, handle: str, fn: Mutator, *, actor: str, op: str, read: bytes | Unread | None
    ) -> Outcome | None:
        """One write as two round trips and no transaction: read the values, decide, then
        one statement that writes them only if they are still what was read, with the
        audit row in the same statement (so both commit, or neither). ``fn`` decides on
        the value bytes alone, so "unchanged bytes" is exactly the condition its decision
        needs (a version number could come round again after a delete and re-create).

        Under a lock (``_mutate_locked``) a write cost five round trips (BEGIN, SELECT
        FOR UPDATE, the write, the audit row, COMMIT) and held a pooled connection for
        all of them. None: the row kept changing under this write (hot contention), or
        the decision keeps it as it is; the caller then takes the lock. The first round
        starts from the caller's ``read`` when given (one round trip fewer); a refusal is
        only ever decided on a fresh reading of the primary."""
        key = self.key(handle)
        attempt = 0
        while attempt < CAS_ATTEMPTS:
            if isinstance(read, Unread):
                attempt += 1
                async with self.pool.acquire() as c:
                    row = await c.fetchrow("SELECT vals FROM handles WHERE handle = $1", key)
                before = bytes(row[0]) if row else None
                fresh = True
            else:
                before, read, fresh = read, UNREAD, False
            try:
                o = fn(before)
            except Refusal as exc:
                if not fresh:
                    continue  # the caller's reading may be a replica's: decide on the primary's
                await self._refused(exc, before, actor, op, handle)
                raise
            if isinstance(o.new, Keep):
                return None  # nothing to compare-and-set; audited under the lock
            e = self._audit_row(before, o, actor, op, handle).row()
            async with self.autocommit() as c:
                if o.new is None:
                    if before is None:
                        return None
                    wrote = await c.fetchval(_DELETE_IF_SAME, key, before, *e)
                elif before is None:
                    wrote = await c.fetchval(
                        _INSERT_IF_ABSENT, key, handle, self.key(storage_prefix(handle)), o.new, *e
                    )
                else:
                    wrote = await c.fetchval(_UPDATE_IF_SAME, key, before, o.new, *e)
            if wrote is not None:
                return o
        return None

    async def _mutate_locked(self, handle: str, fn: Mutator, *, actor: str, op: str) -> Outcome:
        key = self.key(handle)
        for _attempt in range(3):
            refusal: Refusal | None = None
            before: bytes | None = None
            async with self.transaction() as c:
                row = await c.fetchrow("SELECT vals FROM handles WHERE handle = $1 FOR UPDATE", key)
                before = bytes(row[0]) if row else None
                try:
                    o = fn(before)
                except Refusal as exc:
                    refusal = exc  # recorded below, after this transaction wrote nothing
                else:
                    t = now()
                    if isinstance(o.new, Keep):
                        pass
                    elif o.new is None:
                        await c.execute("DELETE FROM handles WHERE handle = $1", key)
                    elif before is None:
                        # No row to lock: a concurrent create may win; then run fn again.
                        inserted = await c.fetchval(
                            "INSERT INTO handles (handle, display, prefix, vals, version,"
                            " created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5)"
                            " ON CONFLICT (handle) DO NOTHING RETURNING 1",
                            key,
                            handle,
                            self.key(storage_prefix(handle)),
                            o.new,
                            t,
                        )
                        if inserted is None:
                            continue
                    else:
                        await c.execute(
                            "UPDATE handles SET vals = $1, version = version + 1,"
                            " updated_at = $2 WHERE handle = $3",
                            o.new,
                            t,
                            key,
                        )
                    if self.search_index and not isinstance(o.new, Keep):
                        item = [(key, o.new)]  # a handle that was not there has no rows
                        await pg_sync(c, item) if before else await pg_sync(c, (), item)
                    e = self._audit_row(before, o, actor, op, handle)
                    await c.execute(_AUDIT, *e.row())
                    return o
            if refusal is not None:
                await self._refused(refusal, before, actor, op, handle)
                raise refusal
        raise StoreError(f"could not write {handle}: concurrent creates kept winning")

    async def create_many(
        self, records: Sequence[HandleRecord], *, actor: str, op: str, replace: bool = False
    ) -> dict[str, tuple[int, str]]:
        # No multi-key SELECT ... FOR UPDATE (Citus runs one only within a shard): the
        # batch's rows are read unlocked, inserts are ON CONFLICT DO NOTHING, and a
        # replacement is a compare-and-set on the version read (see _replace). Keys go
        # to the statements in key order, so two batches that overlap take their row
        # locks in the same order and cannot deadlock each other.
        rows = self._rows(records)
        if not rows:
            return {}
        for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
            try:
                return await self._create_many(rows, actor, op, replace)
            except asyncpg.DeadlockDetectedError as exc:
                # Batches lock in key order, but a batch's inserts after its updates, or
                # another write, can still cross it: the server rolled this one back
                # whole, so it is run again from the start.
                if attempt == DEADLOCK_ATTEMPTS:
                    raise
                log.warning(
                    "a batch of %d handles deadlocked with another write (%s); run again "
                    "(attempt %d of %d)",
                    len(rows),
                    exc,
                    attempt + 1,
                    DEADLOCK_ATTEMPTS,
                )
        raise AssertionError("unreachable")

    async def _create_many(
        self, rows: list[tuple[str, str, str, bytes]], actor: str, op: str, replace: bool
    ) -> dict[str, tuple[int, str]]:
        t = now()
        by_key = {r[0]: r for r in rows}
        async with self.transaction() as c:
            found = await c.fetch(
                "SELECT h.handle, h.vals, h.version FROM unnest($1::text[]) AS k(key)"
                " JOIN handles h ON h.handle = k.key",  # a join: see the module's doc
                sorted(by_key),
            )
            existing = {r[0]: bytes(r[1]) for r in found}
            versions = {r[0]: int(r[2]) for r in found}
            inserts, updates, results = self._batch_decisions(rows, existing, replace)
            made: set[str] = set()
            if updates:
                inserts += await self._replace(c, updates, existing, versions, results, t)
            if inserts:
                inserts.sort()
                cols = list(zip(*inserts, strict=True))
                created = await c.fetch(
                    "INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
                    " updated_at) SELECT h, d, p, v, 1, $5, $5 FROM unnest($1::text[],"
                    " $2::text[], $3::text[], $4::bytea[]) AS t(h, d, p, v)"
                    " ON CONFLICT (handle) DO NOTHING RETURNING handle",
                    list(cols[0]),
                    list(cols[1]),
                    list(cols[2]),
                    list(cols[3]),
                    t,
                )
                made = {r[0] for r in created}
                for r in inserts:
                    if r[0] not in made:  # created concurrently since our SELECT
                        results[r[0]] = (
                            ResponseCode.HANDLE_ALREADY_EXISTS,
                            "registered concurrently; retry to compare",
                        )
            if self.search_index:
                written = [r for r in inserts if r[0] in made] if inserts else []
                await pg_sync(c, [(r[0], r[3]) for r in (*written, *updates)])
            # A no-op retry (same values) is success without an audit row.
            keys = [k for k, (_, msg) in results.items() if msg != REGISTERED_ALREADY]
            await c.execute(
                "INSERT INTO audit_log (at, actor, op, handle, rc, before_sha256, after_sha256,"
                " detail) SELECT $1, $2, $3, k, rc, b, a, d FROM unnest($4::text[], $5::int[],"
                " $6::text[], $7::text[], $8::text[]) AS t(k, rc, b, a, d)",
                t,
                actor,
                op,
                keys,
                [results[k][0] for k in keys],
                [sha256_hex(existing.get(k)) for k in keys],
                [
                    sha256_hex(
                        by_key[k][3] if results[k][0] == ResponseCode.SUCCESS else existing.get(k)
                    )
                    for k in keys
                ],
                [results[k][1] for k in keys],
            )
        return results

    async def _replace(
        self,
        c: asyncpg.Connection,
        updates: list[tuple[str, str, str, bytes]],
        existing: dict[str, bytes],
        versions: dict[str, int],
        results: dict[str, tuple[int, str]],
        t: int,
    ) -> list[tuple[str, str, str, bytes]]:
        """Replace the values of ``updates`` as read (``existing``, ``versions``): one
        UPDATE that changes a row only at the version read. A row changed or deleted
        since is read again and decided again (the same as it would have been had the
        batch locked it then): replaced at its new version, left when it now holds these
        values, or created. Returns the rows to create; ``updates`` is left holding the
        rows replaced, ``existing`` the values they replaced, ``results`` every verdict.
        Each round that misses a row does so because another transaction changed it."""
        done: list[tuple[str, str, str, bytes]] = []
        creates: list[tuple[str, str, str, bytes]] = []
        pending = sorted(updates)
        for round_ in range(CAS_ROUNDS + 1):
            if round_ == CAS_ROUNDS:
                # Still changing under us: lock what is left one key at a time (each
                # statement on one shard), in key order, and decide on the locked rows.
                found = []
                for r in pending:
                    row = await c.fetchrow(
                        "SELECT handle, vals, version FROM handles WHERE handle = $1 FOR UPDATE",
                        r[0],
                    )
                    if row is not None:
                        found.append(row)
                pending = self._decide_again(pending, found, existing, versions, results, creates)
                if not pending:
                    break
            cols = list(zip(*pending, strict=True))
            # Rows are locked as the join reaches them: a nested loop over the keys in
            # order locks them in key order, as every other batch does (a hash join
            # would go in the table's order, and two batches could deadlock).
            await c.execute("SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off")
            hit = await c.fetch(
                "UPDATE handles AS h SET display = t.d, vals = t.v, version = h.version + 1,"
                " updated_at = $6 FROM (SELECT * FROM unnest($1::text[], $2::text[],"
                " $3::bytea[], $4::bigint[], $5::bytea[]) AS u(k, d, v, ver, o)"
                # the key's own collation: the order of the inserts and the final round
                # (Python's), whatever the database's default collation is
                ' ORDER BY k COLLATE "C")'
                " AS t WHERE h.handle = t.k"
                # the values too: a handle deleted and made again starts at version 1
                " AND h.version = t.ver AND h.vals = t.o RETURNING h.handle",
                list(cols[0]),
                list(cols[1]),
                list(cols[3]),
                [versions[k] for k in cols[0]],
                [existing[k] for k in cols[0]],
                t,
            )
            await c.execute(
                "SET LOCAL enable_hashjoin TO DEFAULT; SET LOCAL enable_mergejoin TO DEFAULT"
            )
            replaced = {r[0] for r in hit}
            done += [r for r in pending if r[0] in replaced]
            missed = [r for r in pending if r[0] not in replaced]
            if not missed:
                break
            if round_ == CAS_ROUNDS:  # locked rows cannot miss
                raise RuntimeError(f"replacing {missed[0][0]} missed a locked row")
            CAS_RETRIES.inc(len(missed))
            found = await c.fetch(
                "SELECT h.handle, h.vals, h.version FROM unnest($1::text[]) AS k(key)"
                " JOIN handles h ON h.handle = k.key",  # a join: see the module's doc
                [r[0] for r in missed],
            )
            pending = self._decide_again(missed, found, existing, versions, results, creates)
            if not pending:
                break
        updates[:] = done
        return creates

    def _decide_again(
        self,
        rows: list[tuple[str, str, str, bytes]],
        found: Sequence[asyncpg.Record],
        existing: dict[str, bytes],
        versions: dict[str, int],
        results: dict[str, tuple[int, str]],
        creates: list[tuple[str, str, str, bytes]],
    ) -> list[tuple[str, str, str, bytes]]:
        """The verdicts of ``rows`` on their values as read again (``found``): the rows
        still to replace; those now missing are added to ``creates``."""
        for k in [r[0] for r in rows]:
            existing.pop(k, None)
            versions.pop(k, None)
        for r in found:
            existing[r[0]] = bytes(r[1])
            versions[r[0]] = int(r[2])
        inserts, updates, verdicts = self._batch_decisions(rows, existing, True)
        results.update(verdicts)
        creates += inserts
        return sorted(updates)

    async def append_invalidations(self, keys: Sequence[str]) -> int:
        t = now()
        # Two statements that commit on their own (one round trip, not a transaction's
        # three, in every invalidation): the prune need not go with the insert.
        async with self.autocommit() as c:
            newest = await c.fetchval(
                "WITH i AS (INSERT INTO invalidations (handle, at)"
                " SELECT k, $2 FROM unnest($1::text[]) AS k RETURNING id) SELECT max(id) FROM i",
                list(keys),
                t,
            )
            if feed_prune_due(int(newest or 0), len(keys)):
                try:
                    await c.execute(
                        "DELETE FROM invalidations WHERE at < $1", t - FEED_KEEP_SECONDS
                    )
                except Exception as exc:  # the append committed: say so, prune next time
                    log.warning("cannot prune the change feed (%s); it goes on", exc)
        return int(newest or 0)

    async def invalidations_since(self, after: int) -> list[tuple[int, str]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT id, handle FROM invalidations WHERE id > $1 ORDER BY id", after
            )
        return [(int(r[0]), r[1]) for r in rows]

    async def newest_invalidation(self) -> int:
        async with self.pool.acquire() as c:
            return int(await c.fetchval("SELECT coalesce(max(id), 0) FROM invalidations"))

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
        async with self.pool.acquire() as c:
            if new:
                done = await c.fetchval(
                    "INSERT INTO sessions (id, nonce, digest, request, challenge_expires, expires,"
                    " client) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO NOTHING"
                    " RETURNING 1",
                    sid,
                    nonce,
                    digest,
                    request,
                    challenge_expires,
                    expires,
                    client,
                )
            else:
                done = await c.fetchval(
                    "UPDATE sessions SET nonce = $2, digest = $3, request = $4,"
                    " challenge_expires = $5, expires = greatest(expires, $6) WHERE id = $1"
                    " RETURNING 1",
                    sid,
                    nonce,
                    digest,
                    request,
                    challenge_expires,
                    expires,
                )
        return done is not None

    async def session_take(self, sid: int, now: float) -> tuple[bytes, bytes, bytes] | None:
        async with self.transaction() as c:
            # The row lock makes a take single-use even when two workers race for it.
            row = await c.fetchrow(
                "SELECT nonce, digest, request, challenge_expires, mode FROM sessions"
                " WHERE id = $1 AND nonce IS NOT NULL FOR UPDATE",
                sid,
            )
            if row is None:
                return None
            if row[4] == 0:
                await c.execute("DELETE FROM sessions WHERE id = $1", sid)
            else:
                await c.execute(
                    "UPDATE sessions SET nonce = NULL, digest = NULL, request = NULL WHERE id = $1",
                    sid,
                )
        if row[3] < now:
            return None
        return bytes(row[0]), bytes(row[1]), bytes(row[2])

    async def session_lookup(self, sid: int, now: float) -> tuple[SessionRow | None, bool]:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                f"SELECT {SESSION_COLUMNS}, nonce IS NOT NULL AND challenge_expires >= $2"
                " FROM sessions WHERE id = $1",
                sid,
                now,
            )
        if row is None:
            return None, False
        keyed = row[1] != 0 and row[11] >= now
        return (session_row(tuple(row)) if keyed else None), bool(row[13])

    async def session_open(self, sid: int, s: NewSession, expires: float) -> bool:
        claimed = s.claimed or (None, None)
        async with self.pool.acquire() as c:
            done = await c.fetchval(
                "INSERT INTO sessions (id, mode, cipher, key_sealed, claimed_handle,"
                " claimed_index, major, minor, idle_timeout, expires, client)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                " ON CONFLICT (id) DO NOTHING RETURNING 1",
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
            )
        return done is not None

    async def session_set_key(self, sid: int, cipher: int, key_sealed: bytes) -> bool:
        async with self.pool.acquire() as c:
            done = await c.fetchval(
                "UPDATE sessions SET cipher = $2, key_sealed = $3 WHERE id = $1 AND mode <> 0"
                " AND key_sealed IS NULL RETURNING 1",
                sid,
                cipher,
                key_sealed,
            )
        return done is not None

    async def session_authenticate(self, sid: int, handle: str, index: int, expires: float) -> None:
        async with self.pool.acquire() as c:
            await c.execute(
                "UPDATE sessions SET identity_handle = $1, identity_index = $2, expires = $4"
                " WHERE id = $3",
                handle,
                index,
                sid,
                expires,
            )

    async def session_use(
        self, sid: int, mac: bytes, mac_expires: float, now: float, expires: float
    ) -> ReplayCheck:
        async with self.autocommit() as c:
            row = await c.fetchrow(_SESSION_USE, sid, mac, mac_expires, now, expires)
        live, fresh = row
        if not live:
            return ReplayCheck(False, gone=True)
        return ReplayCheck(bool(fresh))

    async def session_next_counter(self, sid: int) -> int | None:
        async with self.pool.acquire() as c:
            n = await c.fetchval(
                "UPDATE sessions SET server_counter = server_counter + 1 WHERE id = $1"
                " RETURNING server_counter",
                sid,
            )
        return None if n is None else int(n)

    async def session_close(self, sid: int) -> bool:
        async with self.transaction() as c:
            done = await c.fetchval("DELETE FROM sessions WHERE id = $1 RETURNING 1", sid)
            await c.execute("DELETE FROM session_replays WHERE session_id = $1", sid)
        return done is not None

    async def sessions_reap(self, now: float) -> int:
        async with self.transaction() as c:
            gone = await c.fetchval(
                "WITH d AS (DELETE FROM sessions WHERE expires < $1 RETURNING id)"
                " SELECT count(*) FROM d",
                now,
            )
            # A live session's unanswered challenge: its request goes, the session stays.
            stale = await c.fetchval(
                "WITH u AS (UPDATE sessions SET nonce = NULL, digest = NULL, request = NULL"
                " WHERE request IS NOT NULL AND challenge_expires < $1 RETURNING id)"
                " SELECT count(*) FROM u",
                now,
            )
            await c.execute(
                "DELETE FROM session_replays r WHERE r.expires < $1 OR NOT EXISTS"
                " (SELECT 1 FROM sessions s WHERE s.id = r.session_id)",
                now,
            )
        return int(gone or 0) + int(stale or 0)

    async def sessions_open_by(self, client: str, now: float) -> int:
        async with self.pool.acquire() as c:
            n = await c.fetchval(
                "SELECT count(*) FROM sessions WHERE client = $1 AND expires >= $2",
                client,
                now,
            )
        return int(n or 0)

    async def sessions_count(self, now: float, limit: int) -> int:
        async with self.pool.acquire() as c:
            n = await c.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM sessions WHERE expires >= $1 LIMIT $2) s",
                now,
                limit,
            )
        return int(n or 0)

    async def sessions_held_by(self, client: str, now: float) -> tuple[int, int]:
        # octet_length() of a TOASTed value reads its size from the pointer, not the value.
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                "SELECT count(*) FILTER (WHERE expires >= $2) AS n,"
                " coalesce(sum(octet_length(request)), 0) AS b FROM sessions WHERE client = $1",
                client,
                now,
            )
        return (int(row["n"]), int(row["b"])) if row is not None else (0, 0)

    async def challenge_bytes(self) -> int:
        async with self.pool.acquire() as c:
            n = await c.fetchval(
                "SELECT coalesce(sum(octet_length(request)), 0) FROM sessions"
                " WHERE request IS NOT NULL"
            )
        return int(n or 0)

    async def server_key(self) -> tuple[str, bytes, bytes] | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                "SELECT algorithm, private_sealed, public_key FROM server_keys WHERE active"
                " ORDER BY id DESC LIMIT 1"
            )
        return None if row is None else (row[0], bytes(row[1]), bytes(row[2]))

    async def put_server_key(self, algorithm: str, private_sealed: bytes, public: bytes) -> None:
        async with self.transaction() as c:
            await c.execute("UPDATE server_keys SET active = false")
            await c.execute(
                "INSERT INTO server_keys (algorithm, private_sealed, public_key, created_at,"
                " active) VALUES ($1, $2, $3, $4, true)",
                algorithm,
                private_sealed,
                public,
                now(),
            )

    async def add_api_key(self, key_sha256: str, handle: str, index: int, label: str) -> None:
        async with self.autocommit() as c:
            await c.execute(
                "INSERT INTO api_keys (key_sha256, identity_handle, identity_index, label,"
                " created_at) VALUES ($1, $2, $3, $4, $5)",
                key_sha256,
                handle,
                index,
                label,
                now(),
            )

    async def api_key(self, key_sha256: str) -> tuple[str, int] | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                "SELECT identity_handle, identity_index FROM api_keys WHERE key_sha256 = $1",
                key_sha256,
            )
        return None if row is None else (row[0], int(row[1]))

    async def api_keys(self) -> list[tuple[str, str, int, str, int]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT key_sha256, identity_handle, identity_index, label, created_at"
                " FROM api_keys ORDER BY created_at, key_sha256"
            )
        return [(r[0], r[1], int(r[2]), r[3], int(r[4])) for r in rows]

    async def delete_api_key(self, key_sha256: str) -> bool:
        async with self.autocommit() as c:
            status = await c.execute("DELETE FROM api_keys WHERE key_sha256 = $1", key_sha256)
        return str(status) != "DELETE 0"

    async def node_key_check(self) -> bytes | None:
        try:
            async with self.pool.acquire() as c:
                sealed = await c.fetchval("SELECT sealed FROM node_key_check WHERE id = 1")
        except asyncpg.UndefinedTableError as exc:  # a schema before 0010
            raise StoreError(f"{exc}: run `idnode init` to upgrade the registry") from None
        return None if sealed is None else bytes(sealed)

    async def put_node_key_check(self, sealed: bytes) -> None:
        async with self.autocommit() as c:
            await c.execute(
                "INSERT INTO node_key_check (id, sealed, created_at) VALUES (1, $1, $2)"
                " ON CONFLICT (id) DO NOTHING",
                sealed,
                now(),
            )

    async def put_template(self, prefix: str, version: str, document: str, actor: str) -> bool:
        async with self.autocommit() as c:
            r = await c.fetchval(
                "INSERT INTO templates (prefix, version, document, created_at, created_by)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (prefix, version) DO NOTHING"
                " RETURNING 1",
                self.key(prefix),
                version,
                document,
                now(),
                actor,
            )
        return r is not None

    async def templates(self, prefix: str) -> list[tuple[str, str]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT version, document FROM templates WHERE prefix = $1"
                " ORDER BY created_at, ctid",
                self.key(prefix),
            )
        return [(r[0], r[1]) for r in rows]

    async def append_audit(self, entry: AuditEntry) -> None:
        e = entry
        async with self.pool.acquire() as c:
            await c.execute(_AUDIT, *e.row())

    async def audit_for(self, handle: str, limit: int = 100) -> list[AuditEntry]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT at, actor, op, handle, rc, before_sha256, after_sha256, detail"
                " FROM audit_log WHERE handle = $1 ORDER BY id DESC LIMIT $2",
                self.key(handle),
                limit,
            )
        return [AuditEntry(*r) for r in rows]

    async def list_handles(self, prefix: str, limit: int = 100_000, after: str = "") -> list[str]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT display FROM handles WHERE handle >= $1 AND handle < $2"
                " AND handle > $4 ORDER BY handle LIMIT $3",
                *key_range(self.key(prefix)),
                limit,
                self.key(after) if after else "",
            )
        return [r[0] for r in rows]

    async def prefix_records(self, limit: int = 100_000) -> list[tuple[str, bytes]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                "SELECT display, vals FROM handles WHERE handle >= $1 AND handle < $2"
                " ORDER BY handle LIMIT $3",
                *key_range(self.key(NA_PREFIX[:-1])),
                limit,
            )
        return [(r[0], bytes(r[1])) for r in rows]

    async def unhome_prefix(self, prefix: str) -> bool:
        async with self.autocommit() as c:
            r = await c.execute(
                "UPDATE prefixes SET status = 'unhomed' WHERE prefix = $1 AND status = 'homed'",
                self.key(prefix),
            )
        return bool(r.endswith(" 1"))

    async def rest_session_create(
        self, id_sha256: str, nonce: bytes, expires: float, now: float
    ) -> None:
        async with self.pool.acquire() as c:
            await c.execute("DELETE FROM rest_sessions WHERE expires < $1", now)
            await c.execute(
                "INSERT INTO rest_sessions (id_sha256, nonce, expires) VALUES ($1, $2, $3)",
                id_sha256,
                nonce,
                expires,
            )

    async def rest_session_get(
        self, id_sha256: str, now: float, extend_to: float
    ) -> tuple[bytes, str | None, int | None] | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                "UPDATE rest_sessions SET expires = CASE WHEN identity_handle IS NULL"
                " THEN expires ELSE $3 END WHERE id_sha256 = $1 AND expires >= $2"
                " RETURNING nonce, identity_handle, identity_index",
                id_sha256,
                now,
                extend_to,
            )
        if row is None:
            return None
        index = row[2]
        return bytes(row[0]), row[1], None if index is None else int(index)

    async def rest_session_swap_nonce(
        self, id_sha256: str, nonce: bytes, now: float, extend_to: float
    ) -> bytes | None:
        async with self.transaction() as c:
            # The row lock makes the swap single-use even when two workers race for it.
            old = await c.fetchval(
                "SELECT nonce FROM rest_sessions WHERE id_sha256 = $1 AND expires >= $2 FOR UPDATE",
                id_sha256,
                now,
            )
            if old is None:
                return None
            await c.execute(
                "UPDATE rest_sessions SET nonce = $2, expires = CASE WHEN identity_handle IS NULL"
                " THEN expires ELSE $3 END WHERE id_sha256 = $1",
                id_sha256,
                nonce,
                extend_to,
            )
        return bytes(old)

    async def rest_session_authenticate(
        self, id_sha256: str, handle: str, index: int, expires: float
    ) -> None:
        async with self.pool.acquire() as c:
            await c.execute(
                "UPDATE rest_sessions SET identity_handle = $2, identity_index = $3,"
                " expires = $4 WHERE id_sha256 = $1",
                id_sha256,
                handle,
                index,
                expires,
            )

    async def rest_sessions_count(self, now: float, limit: int) -> int:
        async with self.pool.acquire() as c:
            n = await c.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM rest_sessions WHERE expires >= $1 LIMIT $2) s",
                now,
                limit,
            )
        return int(n or 0)

    async def rest_session_delete(self, id_sha256: str, now: float) -> bool:
        async with self.pool.acquire() as c:
            r = await c.execute(
                "DELETE FROM rest_sessions WHERE id_sha256 = $1 AND expires >= $2",
                id_sha256,
                now,
            )
        return bool(r.endswith(" 1"))

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
        async with self.transaction() as c:
            # One open application per prefix, even when two arrive at once on two nodes.
            await c.execute("SELECT pg_advisory_xact_lock(hashtext('prefix_applications'))")
            taken = await c.fetchval(
                "SELECT 1 FROM prefix_applications WHERE prefix = $1"
                " AND status IN ('pending', 'approved')",
                key,
            )
            waiting = await c.fetchval(
                "SELECT count(*) FROM prefix_applications WHERE status = 'pending'"
            )
            if taken is not None or int(waiting) >= max_pending:
                return None
            if max_per_source > 0:
                theirs = await c.fetchval(
                    "SELECT count(*) FROM prefix_applications WHERE source = $1"
                    " AND status = 'pending'",
                    source,
                )
                if int(theirs) >= max_per_source:
                    return None
            app_id = await c.fetchval(
                "INSERT INTO prefix_applications (prefix, display, mode, status, admin_kind,"
                " admin_key, site, contact, applicant, created_at, source)"
                " VALUES ($1, $2, $3, 'pending', $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                key,
                prefix,
                mode,
                admin_kind,
                admin_key,
                site,
                contact,
                applicant,
                now(),
                source,
            )
        return int(app_id)

    async def prefix_application(self, app_id: int) -> ApplicationRow | None:
        async with self.pool.acquire() as c:
            row = await c.fetchrow(
                f"SELECT {APPLICATION_COLUMNS} FROM prefix_applications WHERE id = $1", app_id
            )
        return None if row is None else application_row(tuple(row))

    async def prefix_applications(
        self, status: str | None = None, limit: int = 1000, *, after: int | None = None
    ) -> list[ApplicationRow]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                f"SELECT {APPLICATION_COLUMNS} FROM prefix_applications"
                " WHERE ($1::text IS NULL OR status = $1) AND ($3::bigint IS NULL OR id < $3)"
                " ORDER BY id DESC LIMIT $2",
                status,
                limit,
                after,
            )
        return [application_row(tuple(r)) for r in rows]

    async def expire_prefix_applications(self, created_before: int, reason: str) -> int:
        async with self.autocommit() as c:
            done = await c.fetch(
                "UPDATE prefix_applications SET status = 'rejected', decided_by = 'node',"
                " reason = $1, decided_at = $2 WHERE status = 'pending' AND created_at < $3"
                " RETURNING id",
                reason,
                now(),
                created_before,
            )
        return len(done)

    async def decide_prefix_application(
        self, app_id: int, status: str, decided_by: str, reason: str, upward: str = ""
    ) -> bool:
        async with self.autocommit() as c:
            done = await c.fetchval(
                "UPDATE prefix_applications SET status = $2, decided_by = $3, reason = $4,"
                " decided_at = $5, upward = $6 WHERE id = $1 AND status = 'pending'"
                " RETURNING 1",
                app_id,
                status,
                decided_by,
                reason,
                now(),
                upward,
            )
        return done is not None

    async def set_prefix_upward(
        self, app_id: int, upward: str, error: str, attempts: int, next_at: float
    ) -> None:
        async with self.autocommit() as c:
            await c.execute(
                "UPDATE prefix_applications SET upward = $2, upward_error = $3,"
                " upward_attempts = $4, upward_next_at = $5 WHERE id = $1",
                app_id,
                upward,
                error,
                attempts,
                next_at,
            )

    async def claim_prefix_upward(
        self, now: float, lease: float, limit: int = 100
    ) -> list[ApplicationRow]:
        async with self.autocommit() as c:
            rows = await c.fetch(
                "UPDATE prefix_applications SET upward_next_at = $1 WHERE id IN (SELECT id"
                " FROM prefix_applications WHERE upward = 'queued' AND upward_next_at <= $2"
                " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED)"
                f" RETURNING {APPLICATION_COLUMNS}",
                now + lease,
                now,
                limit,
            )
        return sorted((application_row(tuple(r)) for r in rows), key=lambda a: a.id)

    async def suspend_prefix(self, prefix: str, reason: str, by: str) -> bool:
        async with self.autocommit() as c:
            done = await c.fetchval(
                "INSERT INTO prefix_suspensions (prefix, display, reason, suspended_by, at)"
                " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (prefix) DO NOTHING RETURNING 1",
                self.key(prefix),
                prefix,
                reason,
                by,
                now(),
            )
        return done is not None

    async def resume_prefix(self, prefix: str) -> bool:
        async with self.autocommit() as c:
            r = await c.execute(
                "DELETE FROM prefix_suspensions WHERE prefix = $1", self.key(prefix)
            )
        return bool(r.endswith(" 1"))

    async def suspended_prefixes(self) -> list[tuple[str, str]]:
        async with self.pool.acquire() as c:
            rows = await c.fetch("SELECT display, reason FROM prefix_suspensions ORDER BY prefix")
        return [(r[0], r[1]) for r in rows]

    # --- statistics (0012) -------------------------------------------------------------

    async def add_statistics(self, day: str, counts: Sequence[Counts]) -> None:
        rows = [c for c in counts if c[1] or c[2] or c[3]]
        if not rows:
            return
        async with self.autocommit() as c:
            await c.execute(
                "INSERT INTO statistics AS s (prefix, day, registrations, resolutions, errors,"
                " seq) SELECT p, $2, g, r, e, 1 FROM unnest($1::text[], $3::bigint[],"
                " $4::bigint[], $5::bigint[]) AS a(p, g, r, e)"
                " ON CONFLICT (prefix, day) DO UPDATE SET"
                " registrations = s.registrations + excluded.registrations,"
                " resolutions = s.resolutions + excluded.resolutions,"
                " errors = s.errors + excluded.errors, seq = s.seq + 1",
                [x[0] for x in rows],
                day,
                [x[1] for x in rows],
                [x[2] for x in rows],
                [x[3] for x in rows],
            )

    async def statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[StatisticsRow]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                f"SELECT {STATISTICS_COLUMNS} FROM statistics WHERE ($1::text IS NULL OR"
                " prefix = $1) AND day >= $2 AND day <= $3 ORDER BY day, prefix",
                prefix,
                since,
                until,
            )
        return [statistics_row(tuple(r)) for r in rows]

    async def claim_statistics(
        self, now: float, lease: float, limit: int = 500
    ) -> list[StatisticsRow]:
        async with self.autocommit() as c:
            rows = await c.fetch(
                "UPDATE statistics SET next_at = $1 WHERE (prefix, day) IN (SELECT prefix, day"
                " FROM statistics WHERE seq > sent_seq AND next_at <= $2 ORDER BY day, prefix"
                f" LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {STATISTICS_COLUMNS}",
                now + lease,
                now,
                limit,
            )
        return sorted((statistics_row(tuple(r)) for r in rows), key=lambda r: (r.day, r.prefix))

    async def statistics_sent(self, acked: Sequence[tuple[str, str, int]]) -> None:
        if not acked:
            return
        async with self.autocommit() as c:
            await c.execute(
                "UPDATE statistics AS s SET sent_seq = GREATEST(s.sent_seq, a.seq),"
                " attempts = 0, next_at = 0, error = '' FROM unnest($1::text[], $2::text[],"
                " $3::bigint[]) AS a(prefix, day, seq) WHERE s.prefix = a.prefix"
                " AND s.day = a.day",
                [x[0] for x in acked],
                [x[1] for x in acked],
                [x[2] for x in acked],
            )

    async def statistics_failed(
        self, rows: Sequence[tuple[str, str]], error: str, next_at: float
    ) -> None:
        if not rows:
            return
        async with self.autocommit() as c:
            await c.execute(
                "UPDATE statistics AS s SET attempts = s.attempts + 1, next_at = $3,"
                " error = $4 FROM unnest($1::text[], $2::text[]) AS a(prefix, day)"
                " WHERE s.prefix = a.prefix AND s.day = a.day",
                [x[0] for x in rows],
                [x[1] for x in rows],
                next_at,
                error,
            )

    async def statistics_pending(self) -> int:
        async with self.pool.acquire() as c:
            n = await c.fetchval("SELECT count(*) FROM statistics WHERE seq > sent_seq")
        return int(n)

    async def statistics_node(self) -> str:
        async with self.pool.acquire() as c:
            node = await c.fetchval("SELECT node FROM statistics_source WHERE id = 1")
        if node is None:
            raise StoreError("no statistics_source row: run idnode init to upgrade the registry")
        return str(node)

    async def receive_statistics(
        self, sender: str, node: str, reports: Sequence[ReceivedRow]
    ) -> None:
        if not reports:
            return
        async with self.autocommit() as c:
            await c.execute(
                "INSERT INTO statistics_received AS s (node, prefix, day, display, sender,"
                " registrations, resolutions, errors, seq, received_at)"
                " SELECT $1, k, d, p, $2, g, r, e, q, $3 FROM unnest($4::text[], $5::text[],"
                " $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::bigint[])"
                " AS a(k, d, p, g, r, e, q)"
                " ON CONFLICT (node, prefix, day) DO UPDATE SET display = excluded.display,"
                " sender = excluded.sender, registrations = excluded.registrations,"
                " resolutions = excluded.resolutions, errors = excluded.errors,"
                " seq = excluded.seq, received_at = excluded.received_at"
                " WHERE excluded.seq > s.seq",
                node,
                sender,
                now(),
                [self.key(r.prefix) for r in reports],
                [r.day for r in reports],
                [r.prefix for r in reports],
                [r.registrations for r in reports],
                [r.resolutions for r in reports],
                [r.errors for r in reports],
                [r.seq for r in reports],
            )

    async def received_statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[ReceivedRow]:
        async with self.pool.acquire() as c:
            rows = await c.fetch(
                f"SELECT {RECEIVED_COLUMNS} FROM statistics_received WHERE ($1::text IS NULL"
                " OR prefix = $1) AND day >= $2 AND day <= $3 ORDER BY day, prefix, node",
                None if prefix is None else self.key(prefix),
                since,
                until,
            )
        return [received_row(tuple(r)) for r in rows]


_AUDIT = (
    "INSERT INTO audit_log (at, actor, op, handle, rc, before_sha256, after_sha256, detail)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)

# A write of one handle and its audit row in one statement, only if the handle still
# holds the values the decision was made on (PostgresStore._mutate_by_compare). $1 the
# key; the audit row's eight columns come last. Each answers 1, or NULL when the handle
# changed (or appeared) meanwhile and nothing was written.
_AUDITED = (
    " INSERT INTO audit_log (at, actor, op, handle, rc, before_sha256, after_sha256, detail)"
    " SELECT ${0}, ${1}, ${2}, ${3}, ${4}, ${5}, ${6}, ${7} FROM w RETURNING 1"
)
# A keyed session's request: the session must be live (its row locked, so a concurrent
# close or expiry waits), the MAC new (recorded until $3), and then the session's life is
# renewed. One statement, so one round trip instead of a transaction's five; it answers
# (live, fresh). $1 session, $2 MAC, $3 the MAC's expiry, $4 now, $5 the new expiry.
_SESSION_USE = """
WITH live AS (
    SELECT id FROM sessions WHERE id = $1 AND mode <> 0 AND expires >= $4 FOR UPDATE
), fresh AS (
    INSERT INTO session_replays (session_id, mac, expires) SELECT id, $2, $3 FROM live
    ON CONFLICT DO NOTHING RETURNING session_id
), renewed AS (
    UPDATE sessions SET expires = $5 FROM fresh WHERE sessions.id = fresh.session_id
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM live), EXISTS (SELECT 1 FROM renewed)
"""
CAS_ATTEMPTS = 4  # then the write takes the row lock (a handle written that often)
_UPDATE_IF_SAME = (
    "WITH w AS (UPDATE handles SET vals = $3, version = version + 1, updated_at = $4"
    " WHERE handle = $1 AND vals = $2 RETURNING 1)" + _AUDITED.format(*range(4, 12))
)
_DELETE_IF_SAME = (
    "WITH w AS (DELETE FROM handles WHERE handle = $1 AND vals = $2 RETURNING 1)"
    + _AUDITED.format(*range(3, 11))
)
_INSERT_IF_ABSENT = (
    "WITH w AS (INSERT INTO handles (handle, display, prefix, vals, version, created_at,"
    " updated_at) VALUES ($1, $2, $3, $4, 1, $5, $5) ON CONFLICT (handle) DO NOTHING"
    " RETURNING 1)" + _AUDITED.format(*range(5, 13))
)
