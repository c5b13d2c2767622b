"""The root site file: where a client starts resolving (the reference's ``root_info``).

Formats read, as HANDLE.NET 7.3 reads them (Configuration, Encoder):

- ``root_info`` (``~/.handle/root_info``, and ``net/handle/etc/root_info`` inside
  handle.jar): the global values, ``int4 length, int4 n, n x handle value``
  (Encoder.encodeGlobalValues); the sites are the HS_SITE / HS_SITE.6 values among them
  (the file also holds HS_ADMIN, HS_PUBKEY and signature values, which are kept, not used).
- ``resolver_site``: one binary HS_SITE record, what ``GetSiteInfo`` writes and what a
  client reads to send everything to one site (Encoder.decodeSiteInfoRecord).
- ``siteinfo.json``: the JSON form the reference server keeps its own site in
  (SiteInfoConverter), one site or a list of them. The 7.3 client does not read it for
  its root, but an operator has it beside every reference server, so it is accepted.

Written: the ``root_info`` form, the one the reference client reads as its root.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from idnode.errors import IdnodeError

from ..codec import HandleValue, ProtocolError, SiteInfo, decode_site, encode_site
from ..codec.codes import DEFAULT_TTL, TYPE_SITE, TYPE_SITE6
from ..codec.jsonform import site_from_json
from ..codec.values import decode_values, encode_values
from ..codec.wire import U32
from .sites import sites_from_values

MAX_ROOT_INFO = 1024 * 1024  # the reference's is 6 KB; a file this large is not one


class RootInfoError(IdnodeError, ValueError):
    """A root site file that cannot be read as any form the reference writes."""


@dataclass(frozen=True, slots=True)
class RootInfo:
    sites: tuple[SiteInfo, ...]
    values: tuple[HandleValue, ...] = ()  # the global values, when the file held them
    form: str = "root_info"  # "root_info", "site" (binary HS_SITE) or "json"


def decode_global_values(data: bytes) -> tuple[HandleValue, ...]:
    """``int4 length`` then ``int4 n, n x value``; bytes after ``length`` are ignored,
    as the reference ignores them."""
    if len(data) < 8:
        raise ProtocolError("root_info: shorter than its two length fields")
    (length,) = U32.unpack_from(data, 0)
    if length > len(data) - 4:
        raise ProtocolError(f"root_info: says {length} bytes follow, {len(data) - 4} do")
    return decode_values(data[4 : 4 + length])


def encode_global_values(values: tuple[HandleValue, ...] | list[HandleValue]) -> bytes:
    body = encode_values(values)
    return U32.pack(len(body)) + body


def site_values(sites: tuple[SiteInfo, ...] | list[SiteInfo]) -> tuple[HandleValue, ...]:
    """The sites as HS_SITE values (HS_SITE.6 for a site with only IPv6 servers, as the
    reference's setup writes them), indexes 1..n."""
    out = []
    for i, s in enumerate(sites, 1):
        v6_only = all(":" in srv.ip for srv in s.servers)
        vtype = TYPE_SITE6 if v6_only and s.servers else TYPE_SITE
        out.append(HandleValue(i, vtype, encode_site(s), DEFAULT_TTL))
    return tuple(out)


def encode_root_info(sites: tuple[SiteInfo, ...] | list[SiteInfo]) -> bytes:
    return encode_global_values(site_values(sites))


def read_root_info(data: bytes) -> RootInfo:
    """Any of the three forms, told apart by their first bytes."""
    if len(data) > MAX_ROOT_INFO:
        raise RootInfoError(f"root info: {len(data)} bytes is not a root site file")
    head = data.lstrip()[:1]
    try:
        if head in (b"{", b"["):
            return RootInfo(_json_sites(data), form="json")
        # root_info starts with the length of the rest; a site record starts with its
        # format version (1) and protocol version (2.x), 00 01 02 xx, which as a length
        # (66,000 and more) exceeds any site record: try the first, then the second.
        if len(data) >= 8 and U32.unpack_from(data, 0)[0] <= len(data) - 4:
            try:
                values = decode_global_values(data)
            except ProtocolError:
                return RootInfo((decode_site(data),), form="site")
            sites = sites_from_values(values)
            if not sites:
                raise RootInfoError("root info: no HS_SITE value among the global values")
            return RootInfo(sites, values, "root_info")
        return RootInfo((decode_site(data),), form="site")
    except ProtocolError as exc:
        raise RootInfoError(f"root info: {exc.reason}") from None


def _json_sites(data: bytes) -> tuple[SiteInfo, ...]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RootInfoError(f"root info: not JSON: {exc}") from None
    items = doc if isinstance(doc, list) else [doc]
    if not items or not all(isinstance(x, dict) for x in items):
        raise RootInfoError("root info: JSON must be a site object or a list of them")
    sites = tuple(site_from_json(x) for x in items)
    if any(not s.servers for s in sites):
        raise RootInfoError("root info: a site without servers")
    return sites


def load_root_info(path: str | Path) -> RootInfo:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise RootInfoError(f"root info {p}: {exc.strerror or exc}") from None
    try:
        return read_root_info(data)
    except RootInfoError as exc:
        raise RootInfoError(f"{p}: {exc}") from None


def write_root_info(path: str | Path, sites: tuple[SiteInfo, ...] | list[SiteInfo]) -> None:
    """Atomically (a reader never sees half a file), in the reference's root_info form."""
    p = Path(path)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(encode_root_info(sites))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
