"""Minting on one server of a multi-server site (registry/writes.py): the minted handle
must hash to this server (else the write would be refused with 301), so suffixes are
drawn until one does, up to 64 draws per server of the site, and a clear error when
every draw hashed elsewhere. Draws are counted, never timed."""

from __future__ import annotations

import asyncio

from idnode.registry.results import WriteResult
from idnode.registry.site_servers import SiteServers
from idnode.registry.writes import MINT_DRAWS_PER_SERVER, HandleWrites
from idnode.resolver.codec import Interface, ResponseCode, ServerInfo, SiteInfo
from idnode.resolver.codec.codes import InterfaceProtocol

N = 100
OWN = 37
MINTS = 200  # at N = 100, 64 draws miss this server for about half of them


def big_site(n: int) -> SiteInfo:
    return SiteInfo(
        tuple(
            ServerInfo.at("127.0.0.1", i, (Interface(3, InterfaceProtocol.TCP, 2000 + i),))
            for i in range(1, n + 1)
        )
    )


def writes_on(site: SiteServers) -> tuple[HandleWrites, list[str]]:
    """Writes whose create of one handle only records it (the store is not the point)."""
    w = HandleWrites.__new__(HandleWrites)
    w.site = site
    created: list[str] = []

    async def create_one(
        handle: str, values: object, who: object, *, overwrite: bool
    ) -> WriteResult:
        created.append(handle)
        return WriteResult(ResponseCode.SUCCESS, changed=True, handle=handle)

    w._create_one = create_one  # type: ignore[method-assign]
    return w, created


def test_every_handle_minted_on_a_large_site_hashes_here() -> None:
    site = SiteServers(big_site(N), OWN)
    w, created = writes_on(site)

    async def go() -> list[WriteResult]:
        return [
            await w.create("88.166/DOC-", (), None, mint=True)  # type: ignore[arg-type]
            for _ in range(MINTS)
        ]

    results = asyncio.run(go())
    assert all(r.code == ResponseCode.SUCCESS for r in results)
    assert len(created) == MINTS
    assert all(h.startswith("88.166/DOC-") for h in created)
    elsewhere = [h for h in created if site.holder(h) is not None]
    assert elsewhere == []


class NeverHere:
    """A site of N servers where every handle hashes to another server."""

    def __init__(self, n: int) -> None:
        self.site = big_site(n)
        self.draws = 0

    def holder(self, handle: str) -> ServerInfo:
        self.draws += 1
        return self.site.servers[1]


def test_a_mint_that_never_hashes_here_is_a_clear_error() -> None:
    site = NeverHere(5)
    w, created = writes_on(site)  # type: ignore[arg-type]
    got = asyncio.run(w.create("88.166/", (), None, mint=True))  # type: ignore[arg-type]
    assert got.code == ResponseCode.ERROR
    assert "hashed to this server of the site" in got.message
    assert "mint on another server of the site" in got.message
    assert created == []
    assert site.draws == MINT_DRAWS_PER_SERVER * 5
