"""Authentication sessions, kept in the registry so every worker shares them.

A 402 challenge opens (or reuses) a session: a session id, a single-use 16-byte nonce
that expires after ``challenge_ttl``, and the request waiting for it. The answer may
reach any worker of any node on the same registry: the reference Java client opens a
new UDP socket per request, and SO_REUSEPORT may hand that socket to another worker. A correct
answer authenticates the session for ``session_ttl`` seconds (sliding), so a client
authenticates once per session. Authenticated identities are cached per worker for a
few seconds, so a busy session does not cost a database query per request.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

from .auth import Identity
from .store import Store


@dataclass(frozen=True)
class Pending:
    request: bytes  # the request waiting for authentication, as it came (wire form)
    nonce: bytes
    digest: bytes  # the request digest the answer must cover


class SessionStore:
    def __init__(
        self,
        store: Store,
        *,
        challenge_ttl: float = 60.0,
        session_ttl: float = 600.0,
        cache_seconds: float = 5.0,
    ) -> None:
        self.store = store
        self.challenge_ttl = challenge_ttl
        self.session_ttl = session_ttl
        self.cache_seconds = cache_seconds
        self._cache: dict[int, tuple[float, Identity]] = {}

    async def challenge(
        self, request: bytes, digest: bytes, session_id: int = 0
    ) -> tuple[int, bytes]:
        nonce = secrets.token_bytes(16)
        now = time.time()
        args = (nonce, digest, request, now + self.challenge_ttl, now + self.challenge_ttl)
        if session_id and await self.store.session_challenge(session_id, *args, new=False):
            return session_id, nonce
        for _ in range(8):
            sid = secrets.randbelow(0x7FFFFFFE) + 1
            if await self.store.session_challenge(sid, *args, new=True):
                return sid, nonce
        raise RuntimeError("no free session id after 8 tries")

    async def take(self, session_id: int) -> Pending | None:
        """The pending challenge of a session, once: a nonce is never accepted twice."""
        row = await self.store.session_take(session_id, time.time())
        return None if row is None else Pending(row[2], row[0], row[1])

    async def authenticate(self, session_id: int, identity: Identity) -> None:
        await self.store.session_authenticate(
            session_id, identity.handle, identity.index, time.time() + self.session_ttl
        )
        self._cache[session_id] = (time.monotonic() + self.cache_seconds, identity)

    async def identity(self, session_id: int) -> Identity | None:
        cached = self._cache.get(session_id)
        if cached is not None and cached[0] > time.monotonic():
            return cached[1]
        now = time.time()
        row = await self.store.session_identity(session_id, now, now + self.session_ttl)
        if row is None:
            self._cache.pop(session_id, None)
            return None
        who = Identity(row[0], row[1])
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[session_id] = (time.monotonic() + self.cache_seconds, who)
        return who
