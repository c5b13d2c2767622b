"""Challenges and sessions, kept in the registry so every worker and node shares them.

A 402 challenge opens (or, inside a keyed session, reuses) an id: a single-use 16-byte
nonce that expires after ``challenge_ttl``, and the request waiting for it. The answer
may reach any worker of any node on the same registry: the reference Java client
opens a new UDP socket per request, and SO_REUSEPORT may hand that socket to another
worker. Answering a bare challenge authorises that one request and nothing after it.

A keyed session is opened by SESSION_SETUP: the client and the node agree a session
key (registry/session_crypto.py), stored sealed under the node key. The session is
anonymous until a challenge inside it proves the identity the client claimed; from
then on a request that carries a valid MAC made with the session key, with a counter
never seen before, acts as that identity. The session id alone authorises nothing:
without the key no MAC can be made, and a captured request's counter is spent.

Idle sessions expire (the client's timeout, capped at ``session_ttl``); a session that
never authenticated lives only ``challenge_ttl``. ``reap`` deletes what expired (the
node runs it every 30 s, on either backend), and empties a live session's challenge
that was not answered in time. What one client may hold open is capped (``per_client``),
and so is what all clients hold (``total``): UDP source addresses can be forged, so the
per-client cap alone does not bound the table.

The request waiting for a challenge must be kept whole: the answer carries only the
signature, and the operation (a CREATE_HANDLE with its values, up to 256 KiB) runs
after it, on whichever worker the answer reaches. It is stored sealed under the node
key (it may carry secret values being written), and its bytes are capped per client
(``client_bytes``) and in all (``total_bytes``), counting what is on disk until the
reaper removes it: an unauthenticated client cannot grow the registry past those caps
(plus what ``total`` small rows take).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import lru_cache

from idnode.errors import RegistryError

from .auth import Identity
from .sealing import Sealer, SecretError
from .store import NewSession, ReplayCheck, SessionRow, SessionTable

MAX_MESSAGE_LIFE = 86_400.0  # a MAC is remembered at most this long (see ``use``)


class SessionLimit(RegistryError):
    """Too many sessions or challenges pending from one client, or in all."""


class Headroom:
    """Is a shared table under its cap? Counted at most once a ``period`` per worker: a
    count per request would cost more than the rows it guards. Between counts a worker
    may overshoot by what it admits in one period, a bounded amount."""

    def __init__(
        self, count: Callable[[float, int], Awaitable[int]], limit: int, period: float = 1.0
    ) -> None:
        self.count = count
        self.limit = limit
        self.period = period
        self._counted_at = float("-inf")
        self._full = False

    async def full(self) -> bool:
        now = time.monotonic()
        if now - self._counted_at >= self.period:
            self._counted_at = now
            self._full = await self.count(time.time(), self.limit) >= self.limit
        return self._full


UNSEALED_KEYS = 4096  # session keys kept unsealed per worker (a key is 16-32 bytes)

SMALL_REQUEST = 4096  # kept bytes of a typical administration request (a URL, an HS_ADMIN)


class ByteBudget:
    """Are the requests kept for challenges under ``limit`` bytes, node-wide? Summed at
    most once a ``period`` per worker; between sums, the bytes this worker admitted are
    added, so it never overshoots by itself. Workers admitting at the same moment may
    each use the room they saw: at worst ``limit`` times the workers, for one period.

    Requests over SMALL_REQUEST may fill only 7/8 of it: the rest is kept for small
    ones, so a flood of large requests does not refuse an administrator's usual write."""

    def __init__(self, count: Callable[[], Awaitable[int]], limit: int, period: float = 1.0):
        self.count = count
        self.limit = limit
        self.period = period
        self._counted_at = float("-inf")
        self._counted = 0
        self._since = 0  # admitted by this worker since the last sum

    async def admit(self, size: int) -> bool:
        now = time.monotonic()
        if now - self._counted_at >= self.period:
            self._counted_at = now
            self._counted = await self.count()
            self._since = 0
        limit = self.limit if size <= SMALL_REQUEST else self.limit - self.limit // 8
        if self._counted + self._since + size > limit:
            return False
        self._since += size
        return True


@dataclass(frozen=True, slots=True)
class Pending:
    request: bytes  # the request waiting for authentication, as it came (wire form)
    nonce: bytes
    digest: bytes  # the request digest the answer must cover


@dataclass(frozen=True, slots=True)
class Session:
    """A keyed session as a worker uses it: the key unsealed."""

    id: int
    mode: int
    cipher: int
    key: bytes | None  # None while a CIPHER_SERVER exchange waits for the client's key
    claimed: Identity | None
    identity: Identity | None  # set once a challenge in the session proved ``claimed``
    major: int
    minor: int
    idle_timeout: float
    client: str = ""  # the address that opened it


class SessionStore:
    """The session rules (sealing, caps, lifetimes) over the registry's session table."""

    def __init__(
        self,
        store: SessionTable,
        sealer: Sealer | None = None,
        *,
        challenge_ttl: float = 60.0,
        session_ttl: float = 600.0,
        per_client: int = 64,
        total: int = 100_000,
        client_bytes: int = 4 << 20,
        total_bytes: int = 32 << 20,
    ) -> None:
        self.store = store
        self.sealer = sealer
        # Every request of a keyed session unseals its key (Fernet: an HMAC and an AES
        # decryption, 6% of a MODIFY_VALUE's node time). A sealed key is unique to its
        # session, so it is kept unsealed here by its sealed form. This authorises
        # nothing by itself: the session's row is read from the registry on every request
        # (gone when closed or expired), and only a row's own sealed key finds its key.
        self._unseal = (
            lru_cache(maxsize=UNSEALED_KEYS)(sealer.unseal) if sealer is not None else None
        )
        self.challenge_ttl = challenge_ttl
        self.session_ttl = session_ttl
        self.per_client = per_client
        self.client_bytes = client_bytes
        self.headroom = Headroom(store.sessions_count, total)
        self.budget = ByteBudget(store.challenge_bytes, total_bytes)

    async def room(self, client: str, kept: int = 0, *, opens: bool = True) -> None:
        """Raise SessionLimit unless ``client`` (and the node) may open one more session
        or challenge (``opens``), keeping ``kept`` bytes of a request for it."""
        if client:
            held, held_bytes = await self.store.sessions_held_by(client, time.time())
            if opens and held >= self.per_client:
                raise SessionLimit(
                    f"{self.per_client} sessions and challenges are already open from {client}"
                )
            if kept and held_bytes + kept > self.client_bytes:
                raise SessionLimit(
                    f"requests of {held_bytes} bytes from {client} already wait for their"
                    " challenges to be answered; answer them or try later"
                )
        if opens and await self.headroom.full():
            raise SessionLimit(
                f"the node holds {self.headroom.limit} sessions and challenges; try later"
            )
        if kept and not await self.budget.admit(kept):
            raise SessionLimit(
                f"the node keeps {self.budget.limit} bytes of requests waiting for their"
                " challenges to be answered; try later"
            )

    # --- challenges ----------------------------------------------------------------------

    async def challenge(
        self, request: bytes, digest: bytes, session_id: int = 0, client: str = ""
    ) -> tuple[int, bytes]:
        """A 402 challenge for ``request``: (id to answer under, nonce). Inside a keyed
        session the session's own id is used, as the reference server does."""
        nonce = secrets.token_bytes(16)
        now = time.time()
        until = now + self.challenge_ttl
        kept = self.sealer.seal(request) if self.sealer is not None else request
        if session_id:
            # The session exists already: only the request's bytes need room.
            await self.room(client, len(kept), opens=False)
            if await self.store.session_challenge(
                session_id, nonce, digest, kept, until, until, new=False
            ):
                return session_id, nonce
            await self.room(client)  # no such session after all: a new row, counted
        else:
            await self.room(client, len(kept))
        for _ in range(8):
            sid = secrets.randbelow(0x7FFFFFFE) + 1
            if await self.store.session_challenge(
                sid, nonce, digest, kept, until, until, new=True, client=client
            ):
                return sid, nonce
        raise RuntimeError("no free session id after 8 tries")

    async def take(self, session_id: int) -> Pending | None:
        """The pending challenge under an id, once: a nonce is never accepted twice."""
        row = await self.store.session_take(session_id, time.time())
        if row is None:
            return None
        request = self.sealer.unseal(row[2]) if self.sealer is not None else row[2]
        return Pending(request, row[0], row[1])

    async def lookup(self, session_id: int) -> tuple[Session | None, bool]:
        """The live keyed session under an id, and whether a challenge is pending there."""
        row, pending = await self.store.session_lookup(session_id, time.time())
        return (None if row is None else self._session(row)), pending

    # --- keyed sessions ------------------------------------------------------------------

    def _seal(self, key: bytes | None) -> bytes | None:
        if key is None:
            return None
        if self.sealer is None:
            raise SecretError("sessions need the node key (idnode init creates it)")
        return self.sealer.seal(key)

    def _session(self, row: SessionRow) -> Session:
        key = None
        if row.key_sealed is not None:
            if self._unseal is None:
                raise SecretError("sessions need the node key (idnode init creates it)")
            key = self._unseal(row.key_sealed)
        return Session(
            row.id,
            row.mode,
            row.cipher,
            key,
            None if row.claimed is None else Identity(*row.claimed),
            None if row.identity is None else Identity(*row.identity),
            row.major,
            row.minor,
            row.idle_timeout,
            row.client,
        )

    def idle_timeout(self, requested: int) -> float:
        """The client's idle timeout, within (0, session_ttl]."""
        return float(min(requested, self.session_ttl)) if requested > 0 else self.session_ttl

    async def open(
        self,
        *,
        mode: int,
        cipher: int,
        key: bytes | None,
        claimed: Identity | None,
        major: int,
        minor: int,
        timeout: int,
        client: str = "",
        room_checked: bool = False,
    ) -> Session:
        """A new keyed session; SessionLimit when ``client`` or the node has too many
        (not checked again with ``room_checked``: the caller asked ``room`` before its key
        agreement)."""
        if not room_checked:
            await self.room(client)
        row = NewSession(
            mode,
            cipher,
            self._seal(key),
            None if claimed is None else (claimed.handle, claimed.index),
            major,
            minor,
            self.idle_timeout(timeout),
            client,
        )
        # Until a challenge proves its identity the session lives only as long as a
        # challenge would: an unauthenticated client cannot keep rows alive.
        expires = time.time() + self.challenge_ttl
        for _ in range(8):
            sid = secrets.randbelow(0x7FFFFFFE) + 1
            if await self.store.session_open(sid, row, expires):
                return Session(
                    sid, mode, cipher, key, claimed, None, major, minor, row.idle_timeout, client
                )
        raise RuntimeError("no free session id after 8 tries")

    async def get(self, session_id: int) -> Session | None:
        row = await self.store.session_get(session_id, time.time())
        return None if row is None else self._session(row)

    async def set_key(self, session_id: int, cipher: int, key: bytes) -> bool:
        """Set the key of a session that has none; False if it is gone or has one."""
        if self.sealer is None:
            raise SecretError("sessions need the node key (idnode init creates it)")
        return await self.store.session_set_key(session_id, cipher, self.sealer.seal(key))

    async def authenticate(self, session: Session, who: Identity) -> None:
        """The session proved ``who``: it acts as ``who`` and lives its idle timeout."""
        expires = time.time() + session.idle_timeout
        await self.store.session_authenticate(session.id, who.handle, who.index, expires)

    async def use(self, session: Session, mac: bytes, expiration: int) -> ReplayCheck:
        """Spend a request's MAC; extends an authenticated session's idle timeout.

        The replay record is the MAC itself, not the counter the credential names: the
        2.5 clients' MACs do not cover that counter (codec.credential._broken_25), so a
        captured request replayed with a new counter still carries the same MAC. The
        MAC covers the header and its expiration time, so a request is refused once it
        has expired and its record need not outlive it."""
        now = time.time()
        if expiration and expiration < now:
            return ReplayCheck(False)
        keep = min(float(expiration or now + MAX_MESSAGE_LIFE), now + MAX_MESSAGE_LIFE)
        life = session.idle_timeout if session.identity is not None else self.challenge_ttl
        return await self.store.session_use(session.id, mac, keep, now, now + life)

    async def next_counter(self, session: Session) -> int | None:
        return await self.store.session_next_counter(session.id)

    async def close(self, session_id: int) -> bool:
        return await self.store.session_close(session_id)

    async def reap(self) -> int:
        return await self.store.sessions_reap(time.time())
