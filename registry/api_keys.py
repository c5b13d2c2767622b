"""API keys: bearer credentials that act as one administrator (INDEX:HANDLE) on the gRPC
Registry service and the REST API.

A key is shown once, when it is created; the registry keeps only its SHA-256, so a
copy of the database holds no key anyone could present. A key is named afterwards by
the first hex digits of that digest (its id, as ``idnode apikey list`` shows it).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from idnode.errors import RegistryError
from idnode.resolver.codec import ProtocolError, decode_values

from .auth import Identity
from .store import ApiKeyStore, HandleStore, Store

KEY_PREFIX = "idn_"  # marks a string as an idnode API key (in logs, secret scanners)
KEY_TYPES = frozenset({"HS_SECKEY", "HS_PUBKEY"})  # values an admin identity proves itself by
MIN_ID_CHARS = 8  # the shortest digest prefix `apikey revoke` accepts


class ApiKeyError(RegistryError, ValueError):
    """The key cannot be created or found (the message says why and what to do)."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key: its digest, whom it acts as, a note for people, when it was made."""

    sha256: str
    admin: Identity
    label: str
    created_at: int

    @property
    def id(self) -> str:
        return self.sha256[:12]


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def check_admin(store: HandleStore, admin: Identity) -> None:
    """Refuse an identity the registry cannot prove: its handle must hold a key
    (HS_SECKEY or HS_PUBKEY) at its index."""
    wire = (await store.get_many([store.key(admin.handle)])).get(store.key(admin.handle))
    if wire is None:
        raise ApiKeyError(
            f"no admin {admin}: {admin.handle} is not in the registry (create it first, e.g. "
            f"idnode init --prefix PREFIX --admin-secret SECRET)"
        )
    try:
        types = {v.type for v in decode_values(wire) if v.index == admin.index}
    except ProtocolError as exc:
        raise ApiKeyError(f"{admin.handle} cannot be read: {exc.reason}") from None
    if not types & KEY_TYPES:
        raise ApiKeyError(
            f"no admin {admin}: {admin.handle} holds no HS_SECKEY or HS_PUBKEY at index "
            f"{admin.index}"
        )


async def create_api_key(store: Store, admin: Identity, label: str = "") -> str:
    """A new key acting as ``admin`` (who must exist); only its digest is stored."""
    await check_admin(store, admin)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await store.add_api_key(digest(key), admin.handle, admin.index, label)
    return key


async def list_api_keys(store: ApiKeyStore) -> list[ApiKey]:
    return [
        ApiKey(sha, Identity(handle, index), label, created)
        for sha, handle, index, label, created in await store.api_keys()
    ]


async def revoke_api_key(store: ApiKeyStore, key_or_id: str) -> ApiKey:
    """Delete the key named by itself or by its id (a prefix of at least MIN_ID_CHARS hex
    digits of its digest); refuse a name that matches no key or several."""
    text = key_or_id.strip()
    if text.startswith(KEY_PREFIX):
        wanted = digest(text)
        found = [k for k in await list_api_keys(store) if k.sha256 == wanted]
    else:
        if len(text) < MIN_ID_CHARS or any(c not in "0123456789abcdef" for c in text.lower()):
            raise ApiKeyError(
                f"{text!r} is neither a key ({KEY_PREFIX}...) nor a key id of at least "
                f"{MIN_ID_CHARS} hex digits (idnode apikey list shows them)"
            )
        found = [k for k in await list_api_keys(store) if k.sha256.startswith(text.lower())]
    if not found:
        raise ApiKeyError(f"no API key {text} (idnode apikey list shows them)")
    if len(found) > 1:
        raise ApiKeyError(f"{text} names {len(found)} keys: give more digits of the id")
    await store.delete_api_key(found[0].sha256)
    return found[0]
