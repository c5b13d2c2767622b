"""Challenge and session state for authenticated Handle requests (per worker, in memory).

A 402 challenge opens a session: a fresh session id and a single-use nonce that
expires after ``challenge_ttl``. A correct answer makes the session authenticated
for ``session_ttl`` (sliding), so a client authenticates once per session.

A client's challenge and answer reach the same worker when they share a TCP
connection, or a UDP socket (the kernel's SO_REUSEPORT hash follows the address pair).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from .auth import Identity


@dataclass
class Pending:
    request: Any  # the Message that needs authentication
    nonce: bytes
    digest: bytes  # the request digest the answer must cover
    expires: float


@dataclass
class Session:
    identity: Identity | None = None
    expires: float = 0.0
    pending: Pending | None = None


@dataclass
class SessionTable:
    challenge_ttl: float = 60.0
    session_ttl: float = 600.0
    max_sessions: int = 100_000
    _sessions: dict[int, Session] = field(default_factory=dict)

    def _new_id(self) -> int:
        while True:
            sid = secrets.randbelow(0x7FFFFFFE) + 1
            if sid not in self._sessions:
                return sid

    def challenge(self, request: Any, digest: bytes, session_id: int = 0) -> tuple[int, bytes]:
        """Open (or reuse an unauthenticated) session with a new nonce for ``request``."""
        now = time.monotonic()
        self._expire(now)
        sid = session_id if session_id in self._sessions else self._new_id()
        nonce = secrets.token_bytes(16)
        s = self._sessions.setdefault(sid, Session(expires=now + self.challenge_ttl))
        s.pending = Pending(request, nonce, digest, now + self.challenge_ttl)
        s.expires = max(s.expires, now + self.challenge_ttl)
        return sid, nonce

    def take(self, session_id: int) -> Pending | None:
        """The pending challenge of a session, once: a nonce is never accepted twice."""
        s = self._sessions.get(session_id)
        if s is None or s.pending is None:
            return None
        p, s.pending = s.pending, None
        if p.expires < time.monotonic():
            return None
        return p

    def authenticate(self, session_id: int, identity: Identity) -> None:
        s = self._sessions.setdefault(session_id, Session())
        s.identity = identity
        s.expires = time.monotonic() + self.session_ttl

    def identity(self, session_id: int) -> Identity | None:
        s = self._sessions.get(session_id)
        if s is None or s.identity is None:
            return None
        now = time.monotonic()
        if s.expires < now:
            del self._sessions[session_id]
            return None
        s.expires = now + self.session_ttl
        return s.identity

    def _expire(self, now: float) -> None:
        if len(self._sessions) < self.max_sessions:
            return
        for sid in [k for k, s in self._sessions.items() if s.expires < now]:
            del self._sessions[sid]
        while len(self._sessions) >= self.max_sessions:  # still full: drop the oldest
            del self._sessions[next(iter(self._sessions))]
