"""The web console's sign-in sessions, kept in the REST sessions' table (so every worker
of every node shares them, and the node's session cap counts them too).

A console session is a cookie value the browser holds; the row is keyed by an HMAC of
it under a fixed label, never by its plain SHA-256 as a REST session is: a console
cookie is no REST ``sessionId``, so whoever steals one cannot act through the REST API
without the CSRF token (found only in the console's pages). The cookie is
``<issued>.<random>``: the issue time is part of what the key covers, so the absolute
lifetime cannot be stretched by editing it. The row's nonce is the session's CSRF
token: a REST answer can never swap it, because no REST session id reaches this row.
Idle expiry is the row's (``ttl``, moved on each use); the absolute one is checked here.

A session lives only as long as the credential it was opened with: the cookie names it
(``<issued>.<credential>.<random>``, covered by the row's key like the issue time), and
every use checks it still holds, one primary-key read: an API key (``k`` + its SHA-256,
as the registry keeps it) must still exist and act as the same administrator; a secret
or key file (``v`` + a digest of the HS_SECKEY/HS_PUBKEY value's stored data, sealed for
a secret) must still be that value. Revoking the key, or changing or removing the value,
ends the administrator's console sessions at their next request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from idnode.resolver.codec import ProtocolError, decode_values

from .api_keys import KEY_PREFIX, KEY_TYPES
from .api_keys import digest as key_digest
from .auth import Identity
from .sessions import Headroom, SessionLimit
from .store import Store

LABEL = b"idnode console session v1"
CSRF_BYTES = 32


@dataclass(frozen=True)
class ConsoleSession:
    identity: Identity
    csrf: str  # hex of the row's nonce
    issued: float


def _key(cookie: str, binding: str) -> str:
    """The row's key: the cookie and what the session is bound to (see signin.py)."""
    text = f"{cookie}\n{binding}".encode("utf-8", "surrogatepass")
    return hmac.new(LABEL, text, hashlib.sha256).hexdigest()


def _parts(cookie: str) -> tuple[float, str] | None:
    """The cookie's issue time and credential tag (None: not a console cookie)."""
    parts = cookie.split(".", 2)
    if len(parts) != 3 or not (parts[1] and parts[2]):
        return None
    stamp, tag = parts[0], parts[1]
    if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
        return None
    return float(stamp), tag


async def value_tag(store: Store, who: Identity) -> str:
    """The tag of the key value ``who`` proves itself by ("v" alone: none, which no
    session's tag equals)."""
    key = store.key(who.handle)
    wire = (await store.get_many([key])).get(key)
    try:
        values = decode_values(wire) if wire is not None else ()
    except ProtocolError:
        values = ()
    data = b"".join(
        hashlib.sha256(v.data).digest()
        for v in values
        if v.index == who.index and v.type in KEY_TYPES
    )
    return "v" + hashlib.sha256(data).hexdigest()[:32] if data else "v"


class ConsoleSessionStore:
    def __init__(self, table: Store, idle: float, absolute: float, total: int = 100_000) -> None:
        self.table = table
        self.idle = idle
        self.absolute = absolute
        self.headroom = Headroom(table.rest_sessions_count, total)

    async def open(
        self, who: Identity, binding: str, api_key: str = ""
    ) -> tuple[str, ConsoleSession]:
        """A signed-in session for ``who`` (signed in with ``api_key``, else with the
        key value at ``who.index``): the cookie value and the session. SessionLimit
        when the node holds too many sessions."""
        if await self.headroom.full():
            raise SessionLimit(f"the node holds {self.headroom.limit} sessions; try later")
        if api_key.startswith(KEY_PREFIX):
            tag = "k" + key_digest(api_key)
        else:
            tag = await value_tag(self.table, who)
        now = time.time()
        cookie = f"{int(now)}.{tag}.{secrets.token_urlsafe(32)}"
        csrf = secrets.token_bytes(CSRF_BYTES)
        key = _key(cookie, binding)
        await self.table.rest_session_create(key, csrf, now + self.idle, now)
        await self.table.rest_session_authenticate(key, who.handle, who.index, now + self.idle)
        return cookie, ConsoleSession(who, csrf.hex(), float(int(now)))

    async def find(self, cookie: str, binding: str) -> ConsoleSession | None:
        """The live session, its idle timer restarted; None when unknown, idle too long,
        past its absolute lifetime, bound to something else, or when the credential it
        was opened with no longer holds (the row is then deleted)."""
        parts = _parts(cookie)
        now = time.time()
        if parts is None or now - parts[0] > self.absolute:
            return None
        issued, tag = parts
        key = _key(cookie, binding)
        row = await self.table.rest_session_get(key, now, now + self.idle)
        if row is None:
            return None
        nonce, handle, index = row
        if handle is None or index is None:
            return None
        who = Identity(handle, index)
        if not await self._holds(tag, who):
            await self.table.rest_session_delete(key, now)
            return None
        return ConsoleSession(who, nonce.hex(), issued)

    async def _holds(self, tag: str, who: Identity) -> bool:
        """The credential the session was opened with still holds for ``who``."""
        if tag.startswith("k"):
            return await self.table.api_key(tag[1:]) == (who.handle, who.index)
        return tag != "v" and await value_tag(self.table, who) == tag

    async def end(self, cookie: str, binding: str) -> bool:
        return await self.table.rest_session_delete(_key(cookie, binding), time.time())
