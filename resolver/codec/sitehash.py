"""Which server of a multi-server site is responsible for a handle (handle-protocol.md §6).

Take the part named by the site's hash option, upper-case its ASCII letters only,
MD5 it, read the last four bytes as a signed big-endian int, take its absolute value,
modulo the number of servers.
"""

from __future__ import annotations

import hashlib

from .codes import HashOption
from .errors import ProtocolError
from .hs_site import ServerInfo, SiteInfo

_UPPER = bytes.maketrans(b"abcdefghijklmnopqrstuvwxyz", b"ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def hash_part(handle: str, option: int) -> bytes:
    """The bytes a hash option takes, upper-cased (ASCII letters only, as Util.upperCase).

    A handle without a slash names a prefix: by prefix it hashes as ``0.NA``, by suffix
    as itself (handle-protocol.md §6, and Util.getPrefixPart/getSuffixPart from 8.x on).
    The 7.3 library took the whole handle by prefix and nothing by suffix there; no
    client hashes such a handle to pick a server (prefix lookups are ``0.NA/<prefix>``),
    so the two rules never meet on the wire.
    """
    raw = handle.encode("utf-8")
    slash = raw.find(b"/")
    if option == HashOption.BY_PREFIX:
        part = raw[:slash] if slash >= 0 else b"0.NA"
    elif option == HashOption.BY_SUFFIX:
        part = raw[slash + 1 :] if slash >= 0 else raw
    elif option == HashOption.BY_HANDLE:
        part = raw
    else:
        raise ProtocolError(f"unknown hash option {option}")
    return part.translate(_UPPER)


def site_hash(handle: str, option: int) -> int:
    d = hashlib.md5(hash_part(handle, option)).digest()
    # abs() of the most negative int stays negative in Java; Python gives 2**31.
    # The two differ for one 32-bit value in 2**32 and only in its modulo sign.
    return abs(int.from_bytes(d[-4:], "big", signed=True))


def server_index(handle: str, option: int, server_count: int) -> int:
    if server_count <= 0:
        raise ProtocolError("a site needs at least one server")
    return site_hash(handle, option) % server_count


def responsible_server(site: SiteInfo, handle: str) -> ServerInfo:
    """The server of ``site`` that holds ``handle``: SiteInfo.determineServer. A client
    asks that server only; another server of the site does not hold the handle."""
    return site.servers[server_index(handle, site.hash_option, len(site.servers))]
