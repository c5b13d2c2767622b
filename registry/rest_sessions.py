"""REST sessions (/api/sessions) as the registry keeps them, so every worker of every node
shares them.

Only the SHA-256 of a session id is stored. An authenticated session expires after
``ttl`` seconds without use; an anonymous one (anyone may open one) lives only
``anonymous_ttl`` from its opening, however it is used, and all the live ones together
are capped at ``total``. Nothing is cached per worker: ending a session ends it
everywhere at once. What a session's holder must send to prove a key is the REST
door's business (resolver/rest_sessions_door.py); this module only keeps the rows.
"""

from __future__ import annotations

import hashlib
import secrets
import time

from .auth import Identity
from .sessions import Headroom, SessionLimit
from .store import RestSessionTable

NONCE_BYTES = 16


def _key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class RestSessionStore:
    def __init__(
        self,
        table: RestSessionTable,
        ttl: float,
        anonymous_ttl: float = 60.0,
        total: int = 100_000,
    ) -> None:
        self.table = table
        self.ttl = ttl
        self.anonymous_ttl = anonymous_ttl
        self.headroom = Headroom(table.rest_sessions_count, total)

    async def open(self) -> tuple[str, bytes]:
        """A new anonymous session: its id and nonce. SessionLimit when the node holds
        too many."""
        if await self.headroom.full():
            raise SessionLimit(f"the node holds {self.headroom.limit} sessions; try later")
        session_id = secrets.token_urlsafe(32)  # 256 random bits
        nonce = secrets.token_bytes(NONCE_BYTES)
        now = time.time()
        await self.table.rest_session_create(_key(session_id), nonce, now + self.anonymous_ttl, now)
        return session_id, nonce

    async def find(self, session_id: str) -> tuple[bytes, Identity | None] | None:
        """The live session's nonce and proved identity, its idle timer restarted; None
        when unknown or expired."""
        now = time.time()
        row = await self.table.rest_session_get(_key(session_id), now, now + self.ttl)
        if row is None:
            return None
        nonce, handle, index = row
        who = Identity(handle, index) if handle is not None and index is not None else None
        return nonce, who

    async def end(self, session_id: str) -> bool:
        return await self.table.rest_session_delete(_key(session_id), time.time())

    async def prove(self, session_id: str, who: Identity) -> None:
        """Record an identity the session's holder proved; it now lives ``ttl`` idle."""
        await self.table.rest_session_authenticate(
            _key(session_id), who.handle, who.index, time.time() + self.ttl
        )

    async def swap_nonce(self, session_id: str) -> tuple[bytes, bytes] | None:
        """Use up the session's nonce: (the nonce an answer must sign, the fresh one).
        Of two answers to one nonce only the first gets it. None: the session is gone."""
        fresh = secrets.token_bytes(NONCE_BYTES)
        now = time.time()
        nonce = await self.table.rest_session_swap_nonce(
            _key(session_id), fresh, now, now + self.ttl
        )
        return None if nonce is None else (nonce, fresh)
