"""What proves who a caller is: keys stored in handles (HS_SECKEY sealed, HS_PUBKEY),
API keys (only their SHA-256 is stored) and the node's sealed bearer tokens.

The checks of an answer against a key are in auth.py; this module finds the key. A
door that names its client's address (``client=``) has the check throttled and its
failure audited by the login guard (login_guard.py): Throttled is then raised instead
of checking a secret the client may only be guessing.

Concurrent checks of one presented secret from one client share a single check, and a
secret proven in the last PROVEN_SECONDS is accepted without one (proven_secrets.py): a
client's burst of requests with one credential is neither throttled nor looked up once
per request.
"""

from __future__ import annotations

import hashlib
import hmac

from idnode.resolver.codec import decode_values
from idnode.resolver.codec.codes import TYPE_PUBKEY, TYPE_SECKEY

from .audit_trail import AuditTrail
from .auth import AuthError, Identity
from .login_guard import LoginGuard, client_key
from .names import normalize
from .proven_secrets import PROVEN_SECONDS, ProvenSecrets
from .sealing import Sealer, SecretError
from .store import Store

TOKEN_SECONDS = 24 * 3600  # how long a login token (IDIS POST /identity/token) is good for


def _api_key_digest(key_sha256: str) -> str:
    return "api key " + key_sha256


def _password_digest(who: Identity, secret: bytes) -> str:
    """What a password check is keyed by: the identity and a digest of the secret (of
    fixed length, so no two (identity, secret) pairs give the same bytes)."""
    named = f"{who.index}:{who.handle}".encode("utf-8", "surrogatepass")
    return "password " + hashlib.sha256(named + b"\0" + hashlib.sha256(secret).digest()).hexdigest()


class Credentials:
    def __init__(
        self,
        store: Store,
        audit: AuditTrail,
        sealer: Sealer | None = None,
        *,
        proven_seconds: float = PROVEN_SECONDS,
    ) -> None:
        self.store = store
        self.audit = audit
        self.sealer = sealer
        self.case_sensitive = store.case_sensitive
        self.guard = LoginGuard(audit)  # the node replaces it with its configured one
        # passwords and API keys proven a moment ago, and their checks in flight
        self.proven: ProvenSecrets[Identity] = ProvenSecrets(proven_seconds)

    async def key_for(self, who: Identity, auth_type: str) -> bytes:
        """The key material an answer must prove: a raw secret, or HS_PUBKEY data."""
        key = normalize(who.handle, self.case_sensitive)
        vals = (await self.store.get_many([key])).get(key)
        if vals is None:
            raise AuthError(f"key handle {who.handle} does not exist")
        for v in decode_values(vals):
            if v.index != who.index:
                continue
            if auth_type == "HS_SECKEY" and v.type == TYPE_SECKEY:
                if self.sealer is None:
                    raise AuthError("this node has no key to open HS_SECKEY values")
                try:
                    return self.sealer.unseal(v.data)
                except SecretError as exc:
                    raise AuthError(str(exc)) from None
            if auth_type == "HS_PUBKEY" and v.type == TYPE_PUBKEY:
                return v.data
            raise AuthError(f"{who} is a {v.type} value, not {auth_type}")
        raise AuthError(f"{who} does not exist")

    async def keys_of(self, handle: str, auth_type: str) -> list[Identity]:
        """Every key of one type a handle holds, in index order (for an answer that names
        the handle alone, as the reference tries them)."""
        key = normalize(handle, self.case_sensitive)
        raw = (await self.store.get_many([key])).get(key)
        if raw is None:
            return []
        wanted = TYPE_SECKEY if auth_type == "HS_SECKEY" else TYPE_PUBKEY
        indexes = sorted(v.index for v in decode_values(raw) if v.type == wanted)
        return [Identity(handle, i) for i in indexes]

    async def check_password(
        self, who: Identity, secret: bytes, *, client: str | None = None, door: str = ""
    ) -> bool:
        """HTTP Basic or IDIS login: is ``secret`` the HS_SECKEY at ``who``? Constant-time.
        With ``client``: throttled (Throttled) and a failure audited. Proven a moment ago,
        or being checked for the same client: no check of its own."""

        async def check() -> Identity | None:
            if client is not None:
                self.guard.admit(client, who)
            try:
                stored = await self.key_for(who, "HS_SECKEY")
            except AuthError:
                stored = None
            ok = stored is not None and hmac.compare_digest(stored, secret)
            if client is not None:
                if ok:
                    self.guard.passed(client, who)
                else:
                    await self.guard.failed(client, who, door or "password", "wrong password")
            return who if ok else None

        digest = _password_digest(who, secret)
        flight = None if client is None else client_key(client)
        return await self.proven.check(digest, flight, check) is not None

    async def api_key_identity(
        self, token: str, *, client: str | None = None, door: str = ""
    ) -> Identity | None:
        """The admin an API key (idnode apikey create) acts as; None when unknown. With
        ``client``: throttled per address (Throttled) and a failure audited. Proven a
        moment ago, or being checked for the same client: no check of its own."""
        key_sha256 = hashlib.sha256(token.encode()).hexdigest()

        async def check() -> Identity | None:
            if client is not None:
                self.guard.admit(client)
            row = await self.store.api_key(key_sha256)
            who = None if row is None else Identity(row[0], row[1])
            if client is not None:
                if who is not None:
                    self.guard.passed(client)
                else:
                    await self.guard.failed(
                        client, f"client {client}", door or "api key", "unknown API key"
                    )
            return who

        flight = None if client is None else client_key(client)
        return await self.proven.check(_api_key_digest(key_sha256), flight, check)

    def forget_api_key(self, key_sha256: str) -> None:
        """An API key (by its stored SHA-256) was just revoked: stop trusting a recent
        proof of it on this worker at once (other workers: within PROVEN_SECONDS)."""
        self.proven.forget(_api_key_digest(key_sha256))

    @property
    def issues_tokens(self) -> bool:
        """Can this node seal login tokens (it has a node key)?"""
        return self.sealer is not None

    def issue_token(self, who: Identity) -> str:
        """A login token for ``who``, good for TOKEN_SECONDS (see issues_tokens)."""
        if self.sealer is None:
            raise SecretError("this node has no node key to seal login tokens with")
        return self.sealer.token(str(who).encode())

    def token_identity(self, token: str) -> Identity | None:
        """Who a login token names; None when it is not this node's, or has expired."""
        if self.sealer is None:
            return None
        payload = self.sealer.open_token(token, TOKEN_SECONDS)
        return None if payload is None else Identity.parse(payload.decode())

    async def failed_login(
        self, who: Identity, target: str, reason: str, *, client: str = "", door: str = "handle"
    ) -> None:
        """Audit a login that did not prove its key, under the handle it was acting on
        (summarised by the login guard: a flood of failures writes a bounded number of
        rows)."""
        await self.guard.failed(client, who, door, reason, target)
