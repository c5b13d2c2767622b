"""The registry's stores: where handles and homed prefixes live.

Two backends behind one interface: SQLite (embedded default, a file in the working
directory) and PostgreSQL (production, through asyncpg with prepared statements).
Reads are batched (``get_many``): the resolver coalesces its misses into one query.

The interface is split by concern (``HandleStore``, ``PrefixStore``, ``AuditLog``,
``InvalidationLog``, ``SessionTable``, ``RestSessionTable``, ``ServerKeyStore``,
``ApiKeyStore``, ``TemplateStore``, ``PrefixLifecycleStore``, ``StatisticsStore``) so a
caller can name the one part it uses; ``Store`` is all of them, and is what a backend
implements.
"""

from __future__ import annotations

import hashlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from idnode.errors import RegistryError, RequestRefused
from idnode.resolver.codec.codes import ResponseCode

from .names import normalize, storage_prefix

if TYPE_CHECKING:
    from .replicas import Observer as ReplicaObserver


@dataclass(frozen=True, slots=True)
class HandleRecord:
    handle: str  # as registered
    values_wire: bytes  # resolver.codec.encode_values(...)


class StoreError(RegistryError, RuntimeError):
    """The store cannot be reached or refused an operation (not a lookup miss)."""


class CommitUnknown(StoreError):
    """The connection went away during COMMIT: the write may or may not have taken
    effect, and nobody can tell until the database answers again. Never reported as a
    failure (a committed write is never reported as failed), nor as a success."""


class Keep:
    """A mutation that changes nothing (an idempotent retry): audited, not written."""


KEEP = Keep()


class Unread:
    """``mutate`` was given no reading of the handle: the store reads it."""


UNREAD = Unread()
# A batch record already registered with the same values: success, nothing written and
# no audit row (an import re-run after a crash must not double the audit trail).
REGISTERED_ALREADY = "already registered with these values"


class Outcome(NamedTuple):
    """What a mutation function decided: the new value list (None deletes the handle)."""

    new: bytes | Keep | None
    rc: int = ResponseCode.SUCCESS
    result: Any = None
    detail: str = ""


class Refusal(RequestRefused):
    """Raised by a mutation function to refuse the write; nothing is written but the audit row."""


Mutator = Callable[[bytes | None], Outcome]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    at: int
    actor: str
    op: str
    handle: str
    rc: int
    before_sha256: str = ""
    after_sha256: str = ""
    detail: str = ""

    def row(self) -> tuple[int, str, str, str, int, str, str, str]:
        """The columns in table order (dataclasses.astuple deep-copies: 4% of a write)."""
        return (
            self.at,
            self.actor,
            self.op,
            self.handle,
            self.rc,
            self.before_sha256,
            self.after_sha256,
            self.detail,
        )


@dataclass(frozen=True, slots=True)
class SessionRow:
    """A session opened by SESSION_SETUP (not a bare 402 challenge)."""

    id: int
    mode: int
    cipher: int
    key_sealed: bytes | None  # None until SESSION_EXCHANGEKEY delivers it (CIPHER_SERVER)
    claimed: tuple[str, int] | None  # who the client said it would authenticate as
    identity: tuple[str, int] | None  # who it proved to be (a challenge in the session)
    major: int
    minor: int
    idle_timeout: float
    expires: float
    client: str


@dataclass(frozen=True, slots=True)
class NewSession:
    mode: int
    cipher: int
    key_sealed: bytes | None
    claimed: tuple[str, int] | None
    major: int
    minor: int
    idle_timeout: float
    client: str


# The columns of a SessionRow, in its order: both stores select them so.
SESSION_COLUMNS = (
    "id, mode, cipher, key_sealed, claimed_handle, claimed_index, identity_handle,"
    " identity_index, major, minor, idle_timeout, expires, client"
)


def session_row(r: tuple[Any, ...]) -> SessionRow:
    """A SessionRow from the SESSION_COLUMNS of a row (further columns are ignored)."""
    return SessionRow(
        int(r[0]),
        int(r[1]),
        int(r[2]),
        None if r[3] is None else bytes(r[3]),
        None if r[4] is None else (r[4], int(r[5])),
        None if r[6] is None else (r[6], int(r[7])),
        int(r[8]),
        int(r[9]),
        float(r[10]),
        float(r[11]),
        r[12],
    )


class ReplayCheck(NamedTuple):
    """What recording a request's MAC found."""

    ok: bool  # never seen in this session: the request may proceed
    gone: bool = False  # the session no longer exists (expired or terminated)


def sha256_hex(data: bytes | None) -> str:
    return hashlib.sha256(data).hexdigest() if data is not None else ""


class HandleStore(ABC):
    """Handles: batched reads, whole-handle writes, a locked read-modify-write, counts
    and listings. Keys passed to ``get_many`` are already normalised (``key``)."""

    case_sensitive: bool

    @property
    def read_concurrency(self) -> int | None:
        """How many ``get_many`` calls can make progress at once (None: no limit worth
        keeping). The resolver batches further misses while that many are under way."""
        return None

    async def write_position(self) -> str:
        """Where the registry's history stands once the writes this worker just committed
        are in it (PostgreSQL: the primary's WAL position; "" when the store has no read
        replicas to keep in step). A write's invalidation carries it to every node."""
        return ""

    def heard_write(self, keys: Sequence[str], position: str) -> None:
        """A write that committed at ``position`` (:meth:`write_position`, on any node)
        changed ``keys``: later reads of them must not see the registry as it was
        before (a read replica is used for them only once it has replayed that far)."""
        return None

    def hold_replicas(self, held: bool) -> None:
        """While held, every read goes to the primary: the caller (the core, while it
        does not trust its caches) may have missed invalidations and their positions.
        Releasing makes the primary's position read after it the floor of every read."""
        return None

    def key(self, handle: str) -> str:
        return normalize(handle, self.case_sensitive)

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Value lists (``int4 n`` + values) of the keys that exist."""

    @abstractmethod
    async def put_many(self, records: Sequence[HandleRecord]) -> int:
        """Insert or replace whole handles in one statement; return how many were written."""

    @abstractmethod
    async def count_handles(self) -> int: ...

    @abstractmethod
    async def count_prefix(self, prefix: str) -> int:
        """Handles registered under one prefix (an index range scan)."""

    @abstractmethod
    async def list_handles(self, prefix: str, limit: int = 100_000, after: str = "") -> list[str]:
        """Handles (as registered) under a prefix, in key order; with ``after``, only those
        whose key follows its key (keyset paging: one index range, never an OFFSET)."""

    @abstractmethod
    async def prefix_records(self, limit: int = 100_000) -> list[tuple[str, bytes]]:
        """Every prefix handle ``0.NA/...`` (as registered, with its value list), in key
        order: one range of the primary key (``names.key_range("0.NA")``). The node reads
        its delegations from them (registry/delegations.py)."""

    @abstractmethod
    async def mutate(
        self, handle: str, fn: Mutator, *, actor: str, op: str, read: bytes | Unread | None = UNREAD
    ) -> Outcome:
        """Read a handle's values, let ``fn`` decide, write, audit: atomically (under a
        lock, or written only if the values are still those ``fn`` decided on).

        ``fn`` raising Refusal rolls everything back and records only the refusal.
        ``read``: the handle's values as the caller read them just before (None: it did
        not exist), which a store that writes by compare-and-set may start from instead
        of reading again; a stale reading only costs that store another round.
        """

    @abstractmethod
    async def create_many(
        self, records: Sequence[HandleRecord], *, actor: str, op: str, replace: bool = False
    ) -> dict[str, tuple[int, str]]:
        """Create handles in one transaction; (response code, message) per normalised key.

        A handle that exists with the same values (timestamps aside) is a success with
        no write, so a retried batch is harmless; with other values it is a conflict
        (101), unless ``replace``. Every record gets an audit row.
        """


class PrefixStore(ABC):
    """The prefixes this node is home to."""

    @abstractmethod
    async def home_prefix(self, prefix: str, owner: str = "") -> None: ...

    @abstractmethod
    async def homed_prefixes(self) -> list[str]: ...

    @abstractmethod
    async def unhome_prefix(self, prefix: str) -> bool: ...


class AuditLog(ABC):
    """Who changed which handle, with what result: append-only."""

    @abstractmethod
    async def append_audit(self, entry: AuditEntry) -> None: ...

    async def append_audit_many(self, entries: Sequence[AuditEntry]) -> None:
        for e in entries:
            await self.append_audit(e)

    @abstractmethod
    async def audit_for(self, handle: str, limit: int = 100) -> list[AuditEntry]: ...


# The change feed keeps an hour of changes; the old ones are deleted once every
# FEED_PRUNE_EVERY appended (the delete scans the table: not on every write).
FEED_KEEP_SECONDS = 3600
FEED_PRUNE_EVERY = 1000


def feed_prune_due(newest: int, appended: int) -> bool:
    """Whether an append that ended at id ``newest`` crossed a multiple of FEED_PRUNE_EVERY."""
    return (newest - appended) // FEED_PRUNE_EVERY != newest // FEED_PRUNE_EVERY


class InvalidationLog(ABC):
    """Changed keys: the registry's change feed. Workers that share no Redis drop them
    from their caches; a node with Redis catches up from it after losing Redis."""

    @abstractmethod
    async def append_invalidations(self, keys: Sequence[str]) -> int:
        """Record changed keys for workers without Redis; return the newest id."""

    @abstractmethod
    async def invalidations_since(self, after: int) -> list[tuple[int, str]]: ...

    @abstractmethod
    async def newest_invalidation(self) -> int:
        """The id of the newest invalidation (0 when there is none): where a reader of
        the change feed starts."""


class SessionTable(ABC):
    """Handle-protocol sessions: one row per session id, shared by every worker of every
    node. A row is a pending 402 challenge, a keyed session (SESSION_SETUP), or both at
    once. (registry.sessions.SessionStore keeps its rules on top: sealing, caps, TTLs.)"""

    @abstractmethod
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
        """Set a session's pending challenge. ``new``: create session ``sid`` (False if the
        id is taken: pick another); else update it (False if it does not exist)."""

    @abstractmethod
    async def session_take(self, sid: int, now: float) -> tuple[bytes, bytes, bytes] | None:
        """(nonce, digest, request) of the pending challenge, removed atomically: once. A
        row that was only a challenge is deleted with it."""

    @abstractmethod
    async def session_lookup(self, sid: int, now: float) -> tuple[SessionRow | None, bool]:
        """In one query: the keyed session ``sid`` unless it expired, and whether a
        challenge is pending under the id."""

    @abstractmethod
    async def session_open(self, sid: int, s: NewSession, expires: float) -> bool:
        """Create keyed session ``sid`` (False if the id is taken)."""

    async def session_get(self, sid: int, now: float) -> SessionRow | None:
        """The keyed session ``sid`` unless it expired."""
        return (await self.session_lookup(sid, now))[0]

    @abstractmethod
    async def session_set_key(self, sid: int, cipher: int, key_sealed: bytes) -> bool:
        """Give a keyed session that has none its key (SESSION_EXCHANGEKEY); False when
        the session is gone or has a key already: a key is set once."""

    @abstractmethod
    async def session_authenticate(self, sid: int, handle: str, index: int, expires: float) -> None:
        """Record the identity a session proved; it now lives to ``expires``."""

    @abstractmethod
    async def session_use(
        self, sid: int, mac: bytes, mac_expires: float, now: float, expires: float
    ) -> ReplayCheck:
        """Record the MAC of a request in session ``sid``: a MAC seen before in the session
        is a replay. It is remembered until ``mac_expires`` (the request's own expiry;
        later it is refused as expired anyway). Extends the session to ``expires``."""

    @abstractmethod
    async def session_next_counter(self, sid: int) -> int | None:
        """The next counter for a MAC the server puts on an answer (1, 2, ...)."""

    @abstractmethod
    async def session_close(self, sid: int) -> bool: ...

    @abstractmethod
    async def sessions_reap(self, now: float) -> int:
        """Delete expired sessions, their replay records and stale challenges (a live
        session's expired challenge loses its request); how many sessions and challenges
        went."""

    @abstractmethod
    async def sessions_open_by(self, client: str, now: float) -> int:
        """Live sessions and pending challenges opened from ``client``."""

    @abstractmethod
    async def sessions_count(self, now: float, limit: int) -> int:
        """Live sessions and pending challenges of every client, counted up to ``limit``."""

    @abstractmethod
    async def sessions_held_by(self, client: str, now: float) -> tuple[int, int]:
        """Live sessions and pending challenges opened from ``client``, and the bytes of
        the requests its challenges keep (until reaped, expired or not: they are on disk)."""

    @abstractmethod
    async def challenge_bytes(self) -> int:
        """The bytes of every request kept for a challenge, until reaped."""


class RestSessionTable(ABC):
    """REST sessions (/api/sessions), keyed by the SHA-256 of the session id: a copy of
    the table holds no id anyone could present. Every worker of every node shares them."""

    @abstractmethod
    async def rest_session_create(
        self, id_sha256: str, nonce: bytes, expires: float, now: float
    ) -> None:
        """Store a new, unauthenticated session; drop the sessions idle past expiry."""

    @abstractmethod
    async def rest_session_get(
        self, id_sha256: str, now: float, extend_to: float
    ) -> tuple[bytes, str | None, int | None] | None:
        """(nonce, identity handle, identity index) of a live session; an authenticated
        session's idle expiry moves to ``extend_to`` (an anonymous one's never moves).
        None when it is unknown or expired."""

    @abstractmethod
    async def rest_session_swap_nonce(
        self, id_sha256: str, nonce: bytes, now: float, extend_to: float
    ) -> bytes | None:
        """Give a live session a new nonce and return the old one, atomically: of two
        answers to one nonce, only the first gets it. An authenticated session's expiry
        moves to ``extend_to``. None when unknown or expired."""

    @abstractmethod
    async def rest_session_authenticate(
        self, id_sha256: str, handle: str, index: int, expires: float
    ) -> None:
        """Record the identity a session's holder proved; it now lives to ``expires``."""

    @abstractmethod
    async def rest_sessions_count(self, now: float, limit: int) -> int:
        """Live REST sessions, counted up to ``limit``."""

    @abstractmethod
    async def rest_session_delete(self, id_sha256: str, now: float) -> bool:
        """End a session; False when it was unknown or expired already."""


class ServerKeyStore(ABC):
    """The server key pair, sealed under the node key, and the check value that tells
    a node started with another node key."""

    @abstractmethod
    async def server_key(self) -> tuple[str, bytes, bytes] | None:
        """(algorithm, sealed private key, public key data) of the active key."""

    @abstractmethod
    async def put_server_key(self, algorithm: str, private_sealed: bytes, public: bytes) -> None:
        """Make this the active server key (the previous one stays, inactive)."""

    @abstractmethod
    async def node_key_check(self) -> bytes | None:
        """The check value sealed with the node key (registry/node_key.py), if stored.
        StoreError when the schema predates it (migration 0010)."""

    @abstractmethod
    async def put_node_key_check(self, sealed: bytes) -> None:
        """Store the check value, unless one is stored already (the first one stays)."""


class ApiKeyStore(ABC):
    """API keys, kept as their SHA-256, each acting as one identity."""

    @abstractmethod
    async def add_api_key(self, key_sha256: str, handle: str, index: int, label: str) -> None: ...

    @abstractmethod
    async def api_key(self, key_sha256: str) -> tuple[str, int] | None: ...

    @abstractmethod
    async def api_keys(self) -> list[tuple[str, str, int, str, int]]:
        """Every key as (key_sha256, identity handle, identity index, label, created_at),
        oldest first."""

    @abstractmethod
    async def delete_api_key(self, key_sha256: str) -> bool:
        """Revoke a key; False when there was none with that digest."""


class TemplateStore(ABC):
    """Prefix templates: immutable versions per prefix."""

    @abstractmethod
    async def put_template(self, prefix: str, version: str, document: str, actor: str) -> bool:
        """Store a template version; False when that version exists already (never changed)."""

    @abstractmethod
    async def templates(self, prefix: str) -> list[tuple[str, str]]:
        """(version, document) of a prefix's templates, oldest first."""


@dataclass(frozen=True, slots=True)
class ApplicationRow:
    """An enterprise's application for a prefix (registry/prefix_applications.py)."""

    id: int
    prefix: str  # as applied for
    mode: str  # "hosted" or "delegated"
    status: str  # "pending", "approved" or "rejected"
    admin_kind: str  # "secret" (sealed under the node key) or "pubkey" (HS_PUBKEY data)
    admin_key: bytes
    site: bytes | None  # HS_SITE data of the enterprise's node (delegated)
    contact: str  # JSON
    applicant: str
    reason: str
    decided_by: str
    created_at: int
    decided_at: int
    upward: str  # "" (not asked), "queued" or "registered"
    upward_error: str
    upward_attempts: int
    upward_next_at: float


# The columns of an ApplicationRow, in its order: both stores select them so.
APPLICATION_COLUMNS = (
    "id, display, mode, status, admin_kind, admin_key, site, contact, applicant, reason,"
    " decided_by, created_at, decided_at, upward, upward_error, upward_attempts, upward_next_at"
)


def application_row(r: Sequence[Any]) -> ApplicationRow:
    return ApplicationRow(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        bytes(r[5]),
        None if r[6] is None else bytes(r[6]),
        r[7],
        r[8],
        r[9],
        r[10],
        int(r[11]),
        int(r[12]),
        r[13],
        r[14],
        int(r[15]),
        float(r[16]),
    )


class PrefixLifecycleStore(ABC):
    """Prefix applications (apply, decide, the upward registration queue) and suspended
    prefixes (migration 0011)."""

    @abstractmethod
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
        """Record a pending application; its id. None when the prefix has a pending or
        approved application already, or ``max_pending`` applications wait already, or
        (``max_per_source`` > 0) that many from ``source`` (a client address) do."""

    @abstractmethod
    async def prefix_application(self, app_id: int) -> ApplicationRow | None: ...

    @abstractmethod
    async def prefix_applications(
        self, status: str | None = None, limit: int = 1000, *, after: int | None = None
    ) -> list[ApplicationRow]:
        """Applications (of one status, or all), newest first; ``after``: only those
        with a smaller id (the next page of a listing)."""

    @abstractmethod
    async def expire_prefix_applications(self, created_before: int, reason: str) -> int:
        """Reject every pending application created before ``created_before`` (decided
        by "node", with ``reason``); how many."""

    @abstractmethod
    async def decide_prefix_application(
        self, app_id: int, status: str, decided_by: str, reason: str, upward: str = ""
    ) -> bool:
        """Approve or reject a pending application (False: unknown or decided already:
        one decision per application, even when two operators race)."""

    @abstractmethod
    async def set_prefix_upward(
        self, app_id: int, upward: str, error: str, attempts: int, next_at: float
    ) -> None:
        """Record an upward registration's state (queued with its error and next try,
        or registered)."""

    @abstractmethod
    async def claim_prefix_upward(
        self, now: float, lease: float, limit: int = 100
    ) -> list[ApplicationRow]:
        """Queued upward registrations due at ``now``, each moved to ``now + lease`` in
        the same statement: of several workers polling, one takes a row."""

    @abstractmethod
    async def suspend_prefix(self, prefix: str, reason: str, by: str) -> bool:
        """Suspend a prefix (False: suspended already)."""

    @abstractmethod
    async def resume_prefix(self, prefix: str) -> bool:
        """Lift a suspension (False: it was not suspended)."""

    @abstractmethod
    async def suspended_prefixes(self) -> list[tuple[str, str]]:
        """(prefix as suspended, reason) of every suspended prefix."""


@dataclass(frozen=True, slots=True)
class StatisticsRow:
    """This node's counts for one prefix and UTC day (registry/statistics.py), and how far
    they have been reported upward: ``seq`` is bumped by every flush that adds to the row,
    ``sent_seq`` is the last ``seq`` the node above acknowledged."""

    prefix: str
    day: str  # YYYY-MM-DD
    registrations: int
    resolutions: int
    errors: int
    seq: int
    sent_seq: int = 0
    attempts: int = 0
    next_at: float = 0.0
    error: str = ""


STATISTICS_COLUMNS = (
    "prefix, day, registrations, resolutions, errors, seq, sent_seq, attempts, next_at, error"
)


def statistics_row(r: Sequence[Any]) -> StatisticsRow:
    return StatisticsRow(
        r[0], r[1], int(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]),
        float(r[8]), r[9],
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class ReceivedRow:
    """A child node's latest cumulative report for one prefix and day, at a top node."""

    node: str  # the reporting registry's id
    prefix: str  # as reported
    day: str
    sender: str  # the administrator it authenticated as
    registrations: int
    resolutions: int
    errors: int
    seq: int
    received_at: int = 0


RECEIVED_COLUMNS = (
    "node, display, day, sender, registrations, resolutions, errors, seq, received_at"
)


def received_row(r: Sequence[Any]) -> ReceivedRow:
    return ReceivedRow(
        r[0], r[1], r[2], r[3], int(r[4]), int(r[5]), int(r[6]), int(r[7]), int(r[8])
    )


# (prefix, registrations, resolutions, errors): what one flush adds for one day.
Counts = tuple[str, int, int, int]


class StatisticsStore(ABC):
    """Per-prefix, per-day statistics: this node's counts and their upward reports, and
    at a top-level node the reports its children sent (migration 0012)."""

    @abstractmethod
    async def add_statistics(self, day: str, counts: Sequence[Counts]) -> None:
        """Add a flush's counts to (prefix, day) rows in one statement (rows made as
        needed; each row touched gets ``seq`` bumped, so it is reported again)."""

    @abstractmethod
    async def statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[StatisticsRow]:
        """This node's rows (of one prefix, or all), days in ``since..until``."""

    @abstractmethod
    async def claim_statistics(
        self, now: float, lease: float, limit: int = 500
    ) -> list[StatisticsRow]:
        """Rows with a snapshot not yet acknowledged (``seq > sent_seq``) and due at
        ``now``, each moved to ``now + lease`` in the same statement (one worker sends)."""

    @abstractmethod
    async def statistics_sent(self, acked: Sequence[tuple[str, str, int]]) -> None:
        """(prefix, day, seq) acknowledged by the node above: ``sent_seq`` raised to it
        (never lowered), the retry state cleared."""

    @abstractmethod
    async def statistics_failed(
        self, rows: Sequence[tuple[str, str]], error: str, next_at: float
    ) -> None:
        """A report of these (prefix, day) rows failed: attempts counted, retried at
        ``next_at``."""

    @abstractmethod
    async def statistics_pending(self) -> int:
        """How many rows have a snapshot not yet acknowledged."""

    @abstractmethod
    async def statistics_node(self) -> str:
        """This registry's reporting id (made by migration 0012)."""

    @abstractmethod
    async def receive_statistics(
        self, sender: str, node: str, reports: Sequence[ReceivedRow]
    ) -> None:
        """Keep child reports in one statement: a (node, prefix, day) row is replaced
        only by a report with a higher ``seq`` (a resend changes nothing)."""

    @abstractmethod
    async def received_statistics(
        self, prefix: str | None = None, since: str = "", until: str = "9999-12-31"
    ) -> list[ReceivedRow]:
        """Received reports (of one prefix, or all), days in ``since..until``, by day."""


class Store(
    HandleStore,
    PrefixStore,
    AuditLog,
    InvalidationLog,
    SessionTable,
    RestSessionTable,
    ServerKeyStore,
    ApiKeyStore,
    TemplateStore,
    PrefixLifecycleStore,
    StatisticsStore,
):
    """A registry backend: every part above, over one database. Callers that need one
    part may ask for it (``HandleStore``, ``SessionTable``, ...); a backend is all of
    them."""

    def __init__(self, url: str, case_sensitive: bool = False) -> None:
        self.url = url
        self.case_sensitive = case_sensitive

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    def _batch_decisions(
        self,
        rows: list[tuple[str, str, str, bytes]],
        existing: dict[str, bytes],
        replace: bool,
    ) -> tuple[
        list[tuple[str, str, str, bytes]],
        list[tuple[str, str, str, bytes]],
        dict[str, tuple[int, str]],
    ]:
        """Split a batch into inserts, replacements and results, given the rows that exist."""
        inserts, updates = [], []
        results: dict[str, tuple[int, str]] = {}
        for row in rows:
            key, _display, _prefix, vals = row
            old = existing.get(key)
            if old is None:
                inserts.append(row)
                results[key] = (ResponseCode.SUCCESS, "created")
            elif same_values(old, vals):
                results[key] = (ResponseCode.SUCCESS, REGISTERED_ALREADY)
            elif replace:
                updates.append(row)
                results[key] = (ResponseCode.SUCCESS, "replaced")
            else:
                results[key] = (
                    ResponseCode.HANDLE_ALREADY_EXISTS,
                    "already registered with other values",
                )
        return inserts, updates, results

    def _audit_row(
        self, before: bytes | None, o: Outcome, actor: str, op: str, handle: str
    ) -> AuditEntry:
        after = before if isinstance(o.new, Keep) else o.new
        return AuditEntry(
            now(),
            actor,
            op,
            self.key(handle),
            o.rc,
            sha256_hex(before),
            sha256_hex(after),
            o.detail,
        )

    async def _refused(
        self, exc: Refusal, before: bytes | None, actor: str, op: str, handle: str
    ) -> None:
        await self.append_audit(
            AuditEntry(
                now(),
                actor,
                op,
                self.key(handle),
                exc.rc,
                sha256_hex(before),
                sha256_hex(before),
                exc.message,
            )
        )

    def _rows(self, records: Sequence[HandleRecord]) -> list[tuple[str, str, str, bytes]]:
        # The last record wins when a batch names a handle twice: one statement
        # cannot update the same row twice on PostgreSQL.
        rows: dict[str, tuple[str, str, str, bytes]] = {}
        for r in records:
            k = self.key(r.handle)
            rows[k] = (k, r.handle, self.key(storage_prefix(r.handle)), r.values_wire)
        return list(rows.values())


def now() -> int:
    return int(time.time())


def redact_url(url: str) -> str:
    """A database URL fit for logs and messages: user kept, password hidden."""
    if "@" not in url or "//" not in url:
        return url
    scheme, rest = url.split("//", 1)
    creds, host = rest.split("@", 1)
    user, has_password, _ = creds.partition(":")
    return f"{scheme}//{user}{':***' if has_password else ''}@{host}"


def same_values(a: bytes, b: bytes) -> bool:
    """Two value lists equal but for their timestamps (a retry is stamped anew)."""
    if a == b:
        return True
    from idnode.resolver.codec import ProtocolError, decode_values

    try:
        va, vb = decode_values(a), decode_values(b)
    except ProtocolError:
        return False
    return [v.__class__(**{**_fields(v), "timestamp": 0}) for v in va] == [
        v.__class__(**{**_fields(v), "timestamp": 0}) for v in vb
    ]


def _fields(v: Any) -> dict[str, Any]:
    return {f: getattr(v, f) for f in v.__dataclass_fields__}


def open_store(
    url: str,
    case_sensitive: bool = False,
    *,
    read_urls: Sequence[str] = (),
    replica_max_lag: float = 5.0,
    replica_observer: ReplicaObserver | None = None,
    pool_size: int = 4,
) -> Store:
    """A store for ``sqlite:///PATH`` or ``postgresql://...`` (not yet opened); with
    ``read_urls``, PostgreSQL read replicas its batched lookups use (registry/replicas.py);
    ``pool_size``: PostgreSQL connections (the node passes its database_pool_size)."""
    if url.startswith("sqlite:///"):
        if read_urls:
            raise StoreError("read replicas need a PostgreSQL database_url, not SQLite")
        from .sqlite_store import SqliteStore

        return SqliteStore(url, case_sensitive)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(
            url,
            case_sensitive,
            read_urls=read_urls,
            replica_max_lag=replica_max_lag,
            replica_observer=replica_observer,
            pool_size=pool_size,
        )
    raise StoreError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
    )
