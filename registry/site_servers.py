"""Which server of this node's multi-server site holds a handle.

A site of N servers (HS_SITE with N server records, as HANDLE.NET sites can be) splits
its handles by the site's hash (resolver/codec/sitehash.py, SiteInfo.determineServer):
each server holds, and accepts writes for, the handles that hash to it. Prefix records
(``0.NA/...``: the site's own HS_SITE, delegations) are the exception: every server holds
its own copy, answers them itself and accepts their writes, because every server needs
them to answer (its published HS_SITE, its delegation map).
"""

from __future__ import annotations

from idnode.resolver.codec.codes import InterfaceProtocol
from idnode.resolver.codec.hs_site import ServerInfo, SiteInfo
from idnode.resolver.codec.sitehash import responsible_server

from .names import NA_PREFIX

_HANDLE = (InterfaceProtocol.TCP, InterfaceProtocol.UDP)


class SiteServers:
    def __init__(self, site: SiteInfo, own_id: int) -> None:
        if not any(s.server_id == own_id for s in site.servers):
            raise ValueError(f"server {own_id} is not a server of the site")
        self.site = site
        self.own_id = own_id

    def holder(self, handle: str) -> ServerInfo | None:
        """The other server of the site that holds ``handle``; None when this one does."""
        prefix_record = handle[: len(NA_PREFIX)].upper() == NA_PREFIX.upper()  # 0.NA/, any case
        if prefix_record or len(self.site.servers) < 2:
            return None
        server = responsible_server(self.site, handle)
        return None if server.server_id == self.own_id else server

    def refusal(self, handle: str) -> str | None:
        """Why a write of ``handle`` does not belong here (naming the server it belongs
        to), or None when it does."""
        server = self.holder(handle)
        if server is None:
            return None
        return (
            f"{handle} hashes to {describe(server)} of this site, which holds it; "
            "send the write there"
        )


def describe(server: ServerInfo) -> str:
    """``server 2 (127.0.0.1:2642)``: its id and its first Handle TCP/UDP port."""
    ports = [i.port for i in server.interfaces if i.protocol in _HANDLE]
    at = f"{server.ip}:{ports[0]}" if ports else server.ip
    return f"server {server.server_id} ({at})"
