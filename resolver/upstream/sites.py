"""Sites out of handle values, as the reference client takes them
(Util.getSitesAndAltSitesFromValues): every HS_SITE / HS_SITE.6 value that decodes is a
site; one that does not is skipped (one bad record must not hide the others), and a site
with an ``alt_addr`` attribute gets a twin at that address.

Records come from other nodes, so what is taken is bounded: at most ``MAX_SITES`` sites
(twins included) from one set of values, and an interface whose port is not a port
(0, or past 65535) is dropped (its server then has no interface of that protocol).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import replace

from ..codec import HandleValue, ProtocolError, ServerInfo, SiteInfo, decode_site
from ..codec.codes import TYPE_SITE, TYPE_SITE6, TYPE_SITE_PREFIX
from ..codec.hs_site import address_to_bytes

# The service of a prefix: HS_SITE (IPv4 or both), HS_SITE.6 (IPv6 only).
SERVICE_TYPES = (TYPE_SITE, TYPE_SITE6)
# Who answers for prefixes derived from this one: HS_NA_DELEGATE in the 7.3 client,
# HS_SITE.PREFIX in later ones. Either may stand in for the other.
TYPE_NA_DELEGATE = "HS_NA_DELEGATE"
DELEGATE_TYPES = (TYPE_NA_DELEGATE, TYPE_SITE_PREFIX)
TYPE_SERV = "HS_SERV"
TYPE_NAMESPACE = "HS_NAMESPACE"
# What a client asks a prefix handle for (Common.LOCATION_TYPES).
LOCATION_TYPES = (*SERVICE_TYPES, *DELEGATE_TYPES, TYPE_SERV, TYPE_NAMESPACE)
MAX_SITES = 16  # sites taken from one set of values (the walker tries 4 per hop)


def usable_port(port: int) -> bool:
    return 0 < port <= 0xFFFF


def _clean(site: SiteInfo) -> SiteInfo:
    """The site without interfaces whose port cannot be used."""
    if all(usable_port(i.port) for s in site.servers for i in s.interfaces):
        return site
    servers = tuple(
        replace(s, interfaces=tuple(i for i in s.interfaces if usable_port(i.port)))
        for s in site.servers
    )
    return replace(site, servers=servers)


def sites_from_values(
    values: Iterable[HandleValue], types: Iterable[str] = SERVICE_TYPES
) -> tuple[SiteInfo, ...]:
    wanted = set(types)
    out: list[SiteInfo] = []
    for v in values:
        if len(out) >= MAX_SITES:
            break
        if v.type not in wanted:
            continue
        try:
            site = decode_site(v.data)
        except ProtocolError:
            continue
        if not site.servers:
            continue  # a site without servers cannot be asked
        site = _clean(site)
        out.append(site)
        alt = alt_site(site)
        if alt is not None:
            out.append(alt)
    return tuple(out[:MAX_SITES])


def alt_site(site: SiteInfo) -> SiteInfo | None:
    """The reference's getAltSiteInfo: ``alt_addr`` on a one-server site (or
    ``alt_addr.<server id>``) names another address of that server, e.g. its IPv6 one.
    The twin is the site with the servers at those addresses."""
    by_id = {s.server_id: s for s in site.servers}
    alts: list[ServerInfo] = []
    for name, value in site.attributes:
        if name == "alt_addr" and len(site.servers) == 1:
            server: ServerInfo | None = site.servers[0]
        elif name.startswith("alt_addr."):
            try:
                server = by_id.get(int(name.partition(".")[2]))
            except ValueError:
                server = None
        else:
            continue
        if server is None:
            continue
        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            continue
        alts.append(replace(server, address=address_to_bytes(value.strip())))
    if not alts:
        return None
    return replace(site, servers=tuple(alts))


def site_label(site: SiteInfo) -> str:
    """A short name for traces and errors: the description attribute, else the servers."""
    desc = dict(site.attributes).get("desc")
    addrs = ",".join(s.ip for s in site.servers[:3]) + ("..." if len(site.servers) > 3 else "")
    return f"{desc} [{addrs}]" if desc else f"[{addrs}]"


def site_identity(site: SiteInfo) -> tuple[tuple[bytes, tuple[tuple[int, int], ...]], ...]:
    """Two site records naming the same servers at the same ports are the same site
    (serial numbers and attributes aside): what loop detection compares."""
    return tuple(
        (s.address, tuple(sorted((i.protocol, i.port) for i in s.interfaces))) for s in site.servers
    )
