"""A registry service over a store, as the node builds it (open_service), and one whose
prefix admin proves itself with a sealed secret key, as `idnode init` makes it (registry):
for the tests of the service and of what checks presented secrets."""

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


async def open_service(
    url: str, tmp: Path, server_admins: list[Identity], prefixes: tuple[str, ...] = ("88.166",)
) -> tuple[Store, RegistryService]:
    """An open store homing ``prefixes`` and the registry service over it, with a node
    key in ``tmp`` (sealing secrets) and these server administrators."""
    store = open_store(url)
    await store.open()
    for p in prefixes:
        await store.home_prefix(p)
    svc = RegistryService(
        store,
        PrefixAuthority(list(prefixes)),
        sealer=Sealer.from_file(tmp / "node.key", create=True),
        server_admins=server_admins,
    )
    return store, svc


async def registry(url: str, tmp: Path) -> tuple[Store, RegistryService]:
    """A registry whose ``300:0.NA/88.166`` is an HS_SECKEY (sealed, as idnode init does)."""
    store, svc = await open_service(url, tmp, [ADMIN])
    key = HandleValue(300, "HS_SECKEY", SECRET, permissions=0x0C)
    assert (await svc.create("0.NA/88.166", (key,), ADMIN)).code == ResponseCode.SUCCESS
    return store, svc
