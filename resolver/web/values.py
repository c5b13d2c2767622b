"""Handle values as a person reads them: one row per value, its data in a form that says
what it is (text, a link, an administrator and its permissions, a site's servers, a
key, or a hex excerpt of binary data) instead of base64.

The typed forms come from the codec's JSON rendering (``data_to_json``), so the page and
the REST API never disagree about what a value holds.
"""

from __future__ import annotations

import binascii
import functools
import time
from dataclasses import dataclass

from ..codec import HandleValue
from ..codec.codes import TYPE_ALIAS, AdminPermission, TtlType
from ..codec.jsonform import data_to_json

# How much of a binary value a page shows (the REST JSON has all of it).
HEX_EXCERPT = 64
LINK_SCHEMES = ("http://", "https://")  # never javascript:, data: and the like
# The permissions an HS_ADMIN can hold, in the enum's order, as plain ints: a page's
# HS_ADMIN tests twelve bits, and a Flag's ``&`` runs Python code where an int's does not.
_PERMISSIONS = tuple((p.name, int(p)) for p in AdminPermission if p.name)


@dataclass(frozen=True)
class DataView:
    """What a template shows for a value's data."""

    kind: str  # text, link, admin, vlist, site, key, binary
    text: str = ""
    size: int = 0
    admin_handle: str = ""
    admin_index: int = 0
    permissions: tuple[str, ...] = ()  # AdminPermission names
    members: tuple[str, ...] = ()  # "index:handle" of an HS_VLIST
    servers: tuple[str, ...] = ()  # "id address protocol/port ..." of an HS_SITE
    serial: int = 0


@dataclass(frozen=True)
class ValueRow:
    index: int
    type: str
    timestamp: str  # ISO 8601, UTC
    ttl: int
    ttl_absolute: str  # non-empty when the TTL is an absolute expiry time
    public: bool
    data: DataView


@functools.lru_cache(maxsize=64)  # a record's values mostly share one timestamp
def _iso(ts: int) -> str:
    # What datetime.fromtimestamp(ts, UTC).strftime(...) gives, without the datetime.
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(ts))


def data_view(vtype: str, data: bytes) -> DataView:
    j = data_to_json(vtype, data)
    fmt, v = j["format"], j["value"]
    if fmt == "string":
        return DataView("link" if v.lower().startswith(LINK_SCHEMES) else "text", text=v)
    if fmt == "admin":
        bits = int(v["permissions"], 2)
        names = tuple(name for name, bit in _PERMISSIONS if bits & bit)
        return DataView(
            "admin", admin_handle=v["handle"], admin_index=v["index"], permissions=names
        )
    if fmt == "vlist":
        return DataView("vlist", members=tuple(f"{m['index']}:{m['handle']}" for m in v))
    if fmt == "site":
        servers = tuple(
            f"#{s['serverId']} {s['address']} "
            + " ".join(f"{i['protocol']}/{i['port']}" for i in s["interfaces"])
            for s in v["servers"]
        )
        return DataView("site", servers=servers, serial=v["serialNumber"])
    if fmt == "key":
        return DataView("key", text=str(v.get("kty", "")), size=len(data))
    excerpt = binascii.hexlify(data[:HEX_EXCERPT], " ").decode()
    return DataView(
        "binary", text=excerpt + (" …" if len(data) > HEX_EXCERPT else ""), size=len(data)
    )


def row(v: HandleValue) -> ValueRow:
    absolute = v.ttl_type == TtlType.ABSOLUTE
    return ValueRow(
        index=v.index,
        type=v.type,
        timestamp=_iso(v.timestamp),
        ttl=v.ttl,
        ttl_absolute=_iso(v.ttl) if absolute else "",
        public=v.public_read,
        data=data_view(v.type, v.data),
    )


def alias_target(values: list[HandleValue]) -> str | None:
    """The handle an HS_ALIAS value names (the lowest index wins), or None."""
    for v in sorted(values, key=lambda v: v.index):
        if v.type == TYPE_ALIAS:
            return v.data.decode("utf-8", "replace").strip()
    return None


def redirect_url(values: list[HandleValue]) -> str | None:
    """Where ``GET /{handle}`` sends a browser: the URL value with the lowest index,
    as the reference proxy does; only http(s), never a script or data URL."""
    for v in sorted(values, key=lambda v: v.index):
        if v.type == "URL" or v.type.startswith("URL."):
            url = v.data.decode("utf-8", "replace").strip()
            if url.lower().startswith(LINK_SCHEMES):
                return url
    return None
