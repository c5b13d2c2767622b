"""HS_SECKEY values are stored sealed, so the registry never holds a secret in the clear.

The keyed-hash MACs clients send (key ‖ data ‖ key) need the secret itself, so a
one-way hash cannot be stored. Secrets are sealed with Fernet under a node key kept
in a file outside the database (0600). Every node that serves the same registry
needs the same key file; a database dump alone reveals no secret.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from idnode.errors import RegistryError

SEALED_PREFIX = b"idnode-sealed:v1:"


class SecretError(RegistryError):
    pass


class Sealer:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    @classmethod
    def from_file(cls, path: str | Path, *, create: bool = False) -> Sealer:
        p = Path(path)
        if not p.exists():
            if not create:
                raise SecretError(
                    f"the node key {p} does not exist: run `idnode init` here, or copy the "
                    "key file of the node that created this registry (--secret-key-file)"
                )
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(Fernet.generate_key())
        return cls(p.read_bytes().strip())

    def seal(self, secret: bytes) -> bytes:
        if secret.startswith(SEALED_PREFIX):
            return secret
        return SEALED_PREFIX + self._fernet.encrypt(secret)

    def unseal(self, stored: bytes) -> bytes:
        if not stored.startswith(SEALED_PREFIX):
            raise SecretError("HS_SECKEY value is not sealed by this node")
        try:
            return self._fernet.decrypt(stored[len(SEALED_PREFIX) :])
        except InvalidToken:
            raise SecretError("HS_SECKEY value was sealed with another node key") from None

    def token(self, payload: bytes) -> str:
        """A bearer token carrying ``payload``, sealed and timestamped (Fernet)."""
        return self._fernet.encrypt(b"token:" + payload).decode()

    def open_token(self, token: str, ttl: int) -> bytes | None:
        """The payload of a token no older than ``ttl`` seconds; None if not ours or expired."""
        try:
            raw = self._fernet.decrypt(token.encode(), ttl=ttl)
        except (InvalidToken, ValueError):
            return None
        return raw[len(b"token:") :] if raw.startswith(b"token:") else None
