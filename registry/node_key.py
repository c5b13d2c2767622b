"""Is this the node key the registry was made with?

Every secret in the registry (HS_SECKEY values, session keys, the server key) is sealed
under the node key file. Served with another key file, a node would start and answer
resolutions, and every login would then fail as if the password were wrong. So
``idnode init`` stores a check value sealed with the node key, and a node opens it
before it serves: a key that cannot open it stops the start with the key file's name.
Registries made before the check value existed get one at their first start, once the
key has shown it opens the server key sealed there (when there is one).
"""

from __future__ import annotations

from idnode.errors import RegistryError

from .sealing import Sealer, SecretError
from .store import ServerKeyStore, StoreError

CHECK_PLAINTEXT = b"idnode node key check v1"


class NodeKeyMismatch(RegistryError):
    """The node key file is not the one the registry's secrets are sealed under."""


def _mismatch(key_file: str) -> NodeKeyMismatch:
    return NodeKeyMismatch(
        f"the node key {key_file} is not the key this registry's secrets are sealed with: "
        "give the key file of the node that ran `idnode init` (--secret-key-file)"
    )


async def check_node_key(store: ServerKeyStore, sealer: Sealer, key_file: str) -> str:
    """Raise NodeKeyMismatch unless ``sealer`` opens the registry's check value; store
    the check value when the registry has none. Returns what was done: "checked",
    "stored", or "old schema" (a registry not upgraded since before migration 0010:
    only its server key, when it has one, could be checked)."""
    try:
        stored = await store.node_key_check()
    except StoreError:
        await _opens_server_key(store, sealer, key_file)
        return "old schema"
    if stored is not None:
        try:
            if sealer.unseal(stored) == CHECK_PLAINTEXT:
                return "checked"
        except SecretError:
            pass
        raise _mismatch(key_file)
    await _opens_server_key(store, sealer, key_file)
    await store.put_node_key_check(sealer.seal(CHECK_PLAINTEXT))
    return "stored"


async def _opens_server_key(store: ServerKeyStore, sealer: Sealer, key_file: str) -> None:
    """Before a check value is stored, the key must open what the registry already
    holds sealed: its server key, when there is one."""
    server_key = await store.server_key()
    if server_key is not None:
        try:
            sealer.unseal(server_key[1])
        except SecretError:
            raise _mismatch(key_file) from None
