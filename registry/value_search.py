"""Reverse lookup: which handles hold a value (``/hrls/handles?URL=...``), who may ask,
and building the value index for a registry that already holds handles.

Terms are ``TYPE=pattern`` pairs, all of which a handle must match (as the EUDAT
reverse-lookup servlet combines them). A pattern is exact, or literal text followed by
``*`` wildcards (``http://example.org/*``, ``http://*.org/x*``): the literal text before the
first ``*`` is a range of the ``(type, data)`` index, the rest is checked within that
range. A pattern that begins with ``*`` and has more after it (``*example*``) would read
every value of that type, so it is refused; ``*`` alone is allowed and lists handles
that have any value of the type, a page at a time. Every query has a limit
(:data:`MAX_LIMIT`) and a time bound (:data:`TIMEOUT_MS`: PostgreSQL's statement
timeout; on SQLite a progress handler that interrupts the query). A worker runs at most
:data:`MAX_RUNNING` searches at once and one per administrator (:data:`MAX_PER_IDENTITY`);
another is refused at once (:class:`SearchBusy`, a 429) rather than queued, so parallel
requests cannot starve the pool the resolution path shares. For a prefix admin the
prefix ranges are given on both the index rows and ``handles`` (its primary key), so
PostgreSQL may drive the query from the handle range when that is the smaller read.
A handle matching a wildcard with several values is one hit, counted before the page is cut
(pages are full and a handle is on one page only).

Who may search: server administrators, everything; any other authenticated
administrator, the handles under the prefixes whose admins grant it LIST_HANDLES (the
same right as listing a prefix: a search is a filtered listing). Only searchable values
are indexed at all (registry/value_index.py: public, not HS_ types).
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import asyncpg

from idnode.resolver.codec import AdminPermission

from .auth import Identity
from .names import PrefixAuthority, key_range, normalize
from .permissions import Permissions
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import Refusal, Store, StoreError
from .value_index import MAX_DATA_BYTES, pg_sync, sqlite_sync

MAX_LIMIT = 1000
DEFAULT_LIMIT = 1000  # the servlet's page when none is asked for
MAX_TERMS = 8
MAX_OFFSET = 100_000  # page * limit: deeper pages are a dump, not a search
TIMEOUT_MS = 5000
BUILD_BATCH = 2000
MAX_RUNNING = 4  # searches a worker runs at once (its pool also serves resolution)
MAX_PER_IDENTITY = 1  # searches of one administrator a worker runs at once
BUILT_TTL_SECONDS = 10.0  # how long a worker trusts "built" before reading the marker again
# search_index rows: 1 = built (built_at, handles); 0 = writes keep the index since
# built_at (written when a build starts), so every writer, `idnode import` included, knows.
BUILT_ROW, ON_ROW = 1, 0

NOT_ON = (
    "reverse lookup is off on this node: start every node with --search-index "
    "(IDNODE_SEARCH_INDEX=true), then run `idnode search-index build` once"
)
NOT_BUILT = (
    "the value index has not been built yet: run `idnode search-index build` "
    "(this node already keeps it in step with writes)"
)

TOO_SLOW = (
    f"the search took over {TIMEOUT_MS} ms: narrow it (a longer literal before the *,"
    " another TYPE=value, a smaller page)"
)

log = logging.getLogger("idnode.registry.search")


class SearchRefused(ValueError):
    """A query this node will not run (a 400): the message says what to change."""


class SearchBusy(Exception):
    """Too many searches running in this worker, or one of this administrator's already
    is (a 429: try again in a moment)."""


class SearchUnavailable(Exception):
    """Search is off, or its index is not built yet (a 501 / 503)."""

    def __init__(self, message: str, *, off: bool) -> None:
        super().__init__(message)
        self.off = off  # True: off by configuration (501); False: on, not built (503)


@dataclass(frozen=True, slots=True)
class Term:
    type: str  # upper-cased, as indexed
    literal: str  # the text before the first "*" (all of it when exact)
    exact: bool
    pattern: str  # as given

    @classmethod
    def parse(cls, type_name: str, pattern: str) -> Term:
        kind = type_name.strip().upper()
        if not kind or kind.startswith("HS_"):
            raise SearchRefused(f"{type_name!r} is not a searchable type")
        if not pattern:
            raise SearchRefused(f"{type_name}= needs a value (or * for any)")
        if len(pattern.encode("utf-8")) > MAX_DATA_BYTES:
            raise SearchRefused(f"a search value is at most {MAX_DATA_BYTES} bytes")
        literal, star, _rest = pattern.partition("*")
        if star and not literal and pattern.strip("*"):
            raise SearchRefused(
                f"{type_name}={pattern}: a pattern must begin with literal text (or be * alone);"
                " a leading * would read every value of the type"
            )
        return cls(kind, literal, not star, pattern)

    def like(self) -> str:
        """The pattern as a PostgreSQL LIKE pattern (escape character backslash)."""
        out = self.pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return out.replace("*", "%")

    def glob(self) -> str:
        """The pattern as an SQLite GLOB pattern (case-sensitive, as PostgreSQL's LIKE)."""
        special = {"?": "[?]", "[": "[[]"}
        return "".join(special.get(ch, ch) for ch in self.pattern)


@dataclass(frozen=True, slots=True)
class Hit:
    handle: str  # as registered
    vals: bytes  # its values wire blob, for retrieverecords


def upper_bound(literal: str) -> str:
    """The least string above every string that starts with ``literal`` (code point order,
    which is byte order for UTF-8: both engines compare these columns so)."""
    return literal + "\U0010ffff"


class ValueSearch:
    def __init__(self, store: Store, authority: PrefixAuthority, permissions: Permissions) -> None:
        self.store = store
        self.authority = authority
        self.permissions = permissions
        self._built_until = 0.0  # monotonic time until which "built" is trusted
        self.built_ttl = BUILT_TTL_SECONDS
        self._running = 0
        self._mine: dict[tuple[str, int], int] = {}

    @property
    def enabled(self) -> bool:
        return bool(getattr(self.store, "search_index", False))

    async def built(self) -> tuple[int, int] | None:
        """(built_at, handles) of the last build, or None when it was never built."""
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.pool.acquire() as c:
                row = await c.fetchrow(
                    "SELECT built_at, handles FROM search_index WHERE id = $1", BUILT_ROW
                )
        elif isinstance(store, SqliteStore):
            row = store.db.execute(
                "SELECT built_at, handles FROM search_index WHERE id = ?", (BUILT_ROW,)
            ).fetchone()
        else:
            raise StoreError(f"no value index on {type(store).__name__}")
        return (int(row[0]), int(row[1])) if row else None

    async def _ready(self) -> None:
        if not self.enabled:
            raise SearchUnavailable(NOT_ON, off=True)
        # Re-read a while after: `idnode search-index drop` on another host must turn
        # this worker's answers into 503s, not 200s from an emptied index.
        if time.monotonic() >= self._built_until:
            if await self.built() is None:
                self._built_until = 0.0
                raise SearchUnavailable(NOT_BUILT, off=False)
            self._built_until = time.monotonic() + self.built_ttl

    async def allowed_ranges(self, who: Identity) -> list[tuple[str, str]] | None:
        """The key ranges ``who`` may search: None for everything (a server admin)."""
        if self.permissions.is_server_admin(who):
            return None
        ranges = []
        for prefix in sorted(self.authority.homed):
            try:
                await self.permissions.require_of_prefix(
                    who, prefix, AdminPermission.LIST_HANDLES, "search under this prefix"
                )
            except Refusal:
                continue
            ranges.append(key_range(normalize(prefix, self.store.case_sensitive)))
        return ranges

    async def find(
        self, terms: Sequence[Term], who: Identity, *, limit: int = DEFAULT_LIMIT, page: int = 0
    ) -> list[Hit] | None:
        """The handles matching every term, in (value, handle) order, one page; None when
        ``who`` administers nothing here (a 403)."""
        await self._ready()
        if not terms:
            raise SearchRefused("give at least one TYPE=value, e.g. ?URL=http://example.org/*")
        if len(terms) > MAX_TERMS:
            raise SearchRefused(f"at most {MAX_TERMS} TYPE=value terms")
        if not 0 < limit <= MAX_LIMIT:
            raise SearchRefused(f"limit must be 1..{MAX_LIMIT}")
        if page < 0 or page * limit > MAX_OFFSET:
            raise SearchRefused(f"page * limit must be 0..{MAX_OFFSET}: narrow the search")
        mine = (who.handle, who.index)
        if self._running >= MAX_RUNNING or self._mine.get(mine, 0) >= MAX_PER_IDENTITY:
            raise SearchBusy(
                f"{self._running} searches are running here, {self._mine.get(mine, 0)} of "
                f"them {who}'s: try again in a moment"
            )
        self._running += 1
        self._mine[mine] = self._mine.get(mine, 0) + 1
        try:
            ranges = await self.allowed_ranges(who)
            if ranges is not None and not ranges:
                return None
            store = self.store
            if isinstance(store, PostgresStore):
                return await self._find_pg(store, terms, ranges, limit, page * limit)
            if isinstance(store, SqliteStore):
                return self._find_sqlite(store, terms, ranges, limit, page * limit)
            raise StoreError(f"no value index on {type(store).__name__}")
        finally:
            self._running -= 1
            left = self._mine.pop(mine) - 1
            if left:
                self._mine[mine] = left

    async def _find_pg(
        self,
        store: PostgresStore,
        terms: Sequence[Term],
        ranges: list[tuple[str, str]] | None,
        limit: int,
        offset: int,
    ) -> list[Hit]:
        args: list[object] = []

        def arg(v: object) -> str:
            args.append(v)
            return f"${len(args)}"

        def match(alias: str, t: Term) -> str:
            if t.exact:
                return f"{alias}.type = {arg(t.type)} AND {alias}.data = {arg(t.literal)}"
            return (
                f"{alias}.type = {arg(t.type)} AND {alias}.data >= {arg(t.literal)}"
                f" AND {alias}.data < {arg(upper_bound(t.literal))}"
                f" AND {alias}.data LIKE {arg(t.like())}"
            )

        where = _all_terms(terms, match)
        if ranges is not None:
            # On both tables: the planner may then read the prefix's handles (primary
            # key range) instead of the type's whole index range, whichever is smaller.
            for table in ("s", "h"):
                where.append(
                    "("
                    + " OR ".join(
                        f"({table}.handle >= {arg(lo)} AND {table}.handle < {arg(hi)})"
                        for lo, hi in ranges
                    )
                    + ")"
                )
        sql = (
            "SELECT h.display, h.vals, s.handle FROM search_values s"
            f" JOIN handles h ON h.handle = s.handle WHERE {' AND '.join(where)}"
            " ORDER BY s.data, s.handle"
        )
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        async with store.pool.acquire() as c, c.transaction(readonly=True):
            await c.execute(f"SET LOCAL statement_timeout = {TIMEOUT_MS}")
            try:
                if terms[0].exact:  # one row a handle: the engine cuts the page
                    sql += f" LIMIT {arg(limit)} OFFSET {arg(offset)}"
                    return [Hit(r[0], bytes(r[1])) for r in await c.fetch(sql, *args)]
                page = _Page(limit, offset, deadline)
                async for r in c.cursor(sql, *args, prefetch=min(limit + offset, 1000)):
                    if page.add(r[2], r[0], r[1]):
                        break
                return page.hits
            except asyncpg.QueryCanceledError:
                raise SearchRefused(TOO_SLOW) from None

    def _find_sqlite(
        self,
        store: SqliteStore,
        terms: Sequence[Term],
        ranges: list[tuple[str, str]] | None,
        limit: int,
        offset: int,
    ) -> list[Hit]:
        args: list[object] = []

        def match(alias: str, t: Term) -> str:
            if t.exact:
                args.extend((t.type, t.literal))
                return f"{alias}.type = ? AND {alias}.data = ?"
            args.extend((t.type, t.literal, upper_bound(t.literal), t.glob()))
            return (
                f"{alias}.type = ? AND {alias}.data >= ? AND {alias}.data < ?"
                f" AND {alias}.data GLOB ?"
            )

        where = _all_terms(terms, match)
        if ranges is not None:
            where.append(
                "(" + " OR ".join("(s.handle >= ? AND s.handle < ?)" for _ in ranges) + ")"
            )
            for lo, hi in ranges:
                args.extend((lo, hi))
        sql = (
            "SELECT h.display, h.vals, s.handle FROM search_values s"
            f" JOIN handles h ON h.handle = s.handle WHERE {' AND '.join(where)}"
            " ORDER BY s.data, s.handle"
        )
        # SQLite runs on the event loop: bound the query as PostgreSQL's statement
        # timeout does, by interrupting it from its progress handler.
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        store.db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
        try:
            if terms[0].exact:  # one row a handle: the engine cuts the page
                rows = store.db.execute(sql + " LIMIT ? OFFSET ?", (*args, limit, offset))
                return [Hit(r[0], bytes(r[1])) for r in rows.fetchall()]
            page = _Page(limit, offset, deadline)
            cursor = store.db.execute(sql, args)
            try:
                for r in cursor:
                    if page.add(r[2], r[0], r[1]):
                        break
            finally:
                cursor.close()
            return page.hits
        except sqlite3.OperationalError as exc:
            if "interrupt" not in str(exc):
                raise
            raise SearchRefused(TOO_SLOW) from None
        finally:
            store.db.set_progress_handler(None, 0)

    # --- building ---------------------------------------------------------------------

    async def build(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Fill the index from every handle, a batch at a time, each batch in its own
        transaction with its handles' rows locked against writers (a write that lands
        between batches is indexed by that write, when its node runs --search-index).
        Then mark the index built. Returns the number of handles indexed."""
        store = self.store
        await self._mark(ON_ROW, 0)  # from now on every writer that opens it keeps it
        total = await store.count_handles()
        done = 0
        last = ""
        while True:
            if isinstance(store, PostgresStore):
                async with store.transaction() as c:
                    rows = await c.fetch(
                        "SELECT handle, vals FROM handles WHERE handle > $1 ORDER BY handle"
                        " LIMIT $2 FOR SHARE",
                        last,
                        BUILD_BATCH,
                    )
                    await pg_sync(c, [(r[0], bytes(r[1])) for r in rows])
            elif isinstance(store, SqliteStore):
                with store.transaction() as db:
                    rows = db.execute(
                        "SELECT handle, vals FROM handles WHERE handle > ? ORDER BY handle LIMIT ?",
                        (last, BUILD_BATCH),
                    ).fetchall()
                    sqlite_sync(db, [(r[0], bytes(r[1])) for r in rows])
            else:
                raise StoreError(f"no value index on {type(store).__name__}")
            if not rows:
                break
            last = rows[-1][0]
            done += len(rows)
            if progress is not None:
                progress(done, max(total, done))
        await self._mark(BUILT_ROW, done)
        self._built_until = 0.0
        log.info("value index built: %d handles", done)
        return done

    async def _mark(self, row: int, handles: int) -> None:
        store, t = self.store, int(time.time())
        if isinstance(store, PostgresStore):
            async with store.autocommit() as c:
                await c.execute(
                    "INSERT INTO search_index (id, built_at, handles) VALUES ($1, $2, $3)"
                    " ON CONFLICT (id) DO UPDATE SET built_at = $2, handles = $3",
                    row,
                    t,
                    handles,
                )
        elif isinstance(store, SqliteStore):
            store.db.execute(
                "INSERT INTO search_index (id, built_at, handles) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET built_at = excluded.built_at,"
                " handles = excluded.handles",
                (row, t, handles),
            )

    async def drop(self) -> None:
        """Empty the index and forget it was built (after turning --search-index off: an
        index writes no longer keep must not be trusted when it is turned on again)."""
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.transaction() as c:
                await c.execute("DELETE FROM search_index")
                await c.execute("TRUNCATE search_values")
        elif isinstance(store, SqliteStore):
            with store.transaction() as db:
                db.execute("DELETE FROM search_index")
                db.execute("DELETE FROM search_values")
        self._built_until = 0.0

    async def size_bytes(self) -> int | None:
        """The index's bytes on PostgreSQL (table and indexes); None elsewhere."""
        store = self.store
        if not isinstance(store, PostgresStore):
            return None
        async with store.pool.acquire() as c:
            return int(await c.fetchval("SELECT pg_total_relation_size('search_values')"))


def _all_terms(terms: Sequence[Term], match: Callable[[str, Term], str]) -> list[str]:
    """The WHERE conditions of a search: its first term on ``s``, each other term as an
    EXISTS on another row of the same handle (``match(alias, term)`` writes one, with the
    engine's placeholders)."""
    where = [match("s", terms[0])]
    for i, t in enumerate(terms[1:]):
        b = f"b{i}"
        where.append(
            f"EXISTS (SELECT 1 FROM search_values {b} WHERE {b}.handle = s.handle"
            f" AND {match(b, t)})"
        )
    return where


class _Page:
    """One page of a wildcard search, one hit a handle: the rows come in (value, handle)
    order, a handle is taken at its first (least) matching value, the first ``offset``
    handles are skipped. Done in the scan rather than in SQL because a per-handle
    anti-join is planned from the term's range (quadratic, measured: 2.3 s for 2,500
    values), and LIMIT/OFFSET before removing repeats gives short pages and a handle on
    two pages."""

    def __init__(self, limit: int, offset: int, deadline: float) -> None:
        self.limit, self.offset, self.deadline = limit, offset, deadline
        self.seen: set[str] = set()
        self.hits: list[Hit] = []

    def add(self, key: str, display: str, vals: bytes) -> bool:
        """Take one row; True once the page is full."""
        if key not in self.seen:
            self.seen.add(key)
            if len(self.seen) > self.offset:
                self.hits.append(Hit(display, bytes(vals)))
        if time.monotonic() > self.deadline:  # each FETCH has its own statement timeout
            raise SearchRefused(TOO_SLOW)
        return len(self.hits) >= self.limit


def switch_on(store: Store) -> None:
    """Make every write through ``store`` keep the value index in step."""
    if not isinstance(store, (PostgresStore, SqliteStore)):
        raise StoreError(f"--search-index needs SQLite or PostgreSQL, not {type(store).__name__}")
    store.search_index = True


async def marked_on(store: Store) -> bool:
    """Whether the registry says its value index is kept (a build started or finished and
    it was not dropped since): a writer that opens it must then keep it too."""
    try:
        if isinstance(store, PostgresStore):
            async with store.pool.acquire() as c:
                return bool(await c.fetchval("SELECT count(*) FROM search_index"))
        if isinstance(store, SqliteStore):
            return bool(store.db.execute("SELECT count(*) FROM search_index").fetchone()[0])
    except (asyncpg.UndefinedTableError, sqlite3.OperationalError):
        return False  # a schema older than the index (0014): nothing to keep
    return False
