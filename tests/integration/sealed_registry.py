"""A registry whose prefix admin proves itself with a sealed secret key, as `idnode init`
makes it: for the tests of what checks presented secrets (REST sessions, credentials)."""

from __future__ import annotations

from pathlib import Path

from idnode.registry.auth import Identity
from idnode.registry.names import PrefixAuthority
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import Store, open_store
from idnode.resolver.codec import HandleValue, ResponseCode

SECRET = b"correct horse battery staple"
ADMIN = Identity("0.NA/88.166", 300)


async def registry(url: str, tmp: Path) -> tuple[Store, RegistryService]:
    """A registry whose ``300:0.NA/88.166`` is an HS_SECKEY (sealed, as idnode init does)."""
    store = open_store(url)
    await store.open()
    await store.home_prefix("88.166")
    svc = RegistryService(
        store,
        PrefixAuthority(["88.166"]),
        sealer=Sealer.from_file(tmp / "node.key", create=True),
        server_admins=[ADMIN],
    )
    key = HandleValue(300, "HS_SECKEY", SECRET, permissions=0x0C)
    assert (await svc.create("0.NA/88.166", (key,), ADMIN)).code == ResponseCode.SUCCESS
    return store, svc
