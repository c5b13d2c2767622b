"""Delegations: prefixes under this node's homed prefixes that another node serves.

A delegation is a prefix record ``0.NA/<D>`` held in this registry, D covered by a homed
prefix, whose values say that D, or the prefixes derived from it, are served elsewhere.
A top-level node homes ``88`` and holds ``0.NA/88.166`` pointing at the secondary node; a
secondary homes ``88.166`` and holds ``0.NA/88.166.1001`` pointing at an enterprise node.

What a record's values mean, as HANDLE.NET 8.x and later read them (HandleResolver's
ServiceInfo: ``sites`` from HS_SITE, ``prefixSites`` from HS_SITE.PREFIX, the latter used
only to look up derived prefixes, findPrefixReferralSitesForNA; resolver/upstream/
walker.py reads them the same way):

* HS_SITE / HS_SITE.6 values, or HS_SERV naming a service handle whose HS_SITE values are
  the service: where D's own handles ``D/...`` are. D not homed here and the sites not
  naming this node: a delegation of D. Without HS_SITE.PREFIX it covers the derived
  prefixes ``D.x`` too (as the library falls back to ``sites``).
* HS_SITE.PREFIX values: where the derived prefixes ``D.x`` (their handles and their
  ``0.NA/D.x`` records) are. Naming another node: a delegation of D's derived prefixes
  only, whether D itself is homed here, served here, or delegated elsewhere by HS_SITE.
  Its referrals carry these values retyped HS_SITE (the same site format), because a
  302's sites are read from HS_SITE values only (getSitesFromReferralValues).
* sites naming this node (one of its servers, by address and TCP port, in the HS_SITE it
  publishes in its homed prefixes' records): served here, like a homed prefix.

Which answer a handle gets (:meth:`Delegations.referral`), as the HANDLE.NET 7.3.1
library follows referrals (net/handle/hdllib/HandleResolver.java):

* ``P/suffix`` where the nearest of P (by its HS_SITE) and its ancestors (by their
  HS_SITE.PREFIX, else HS_SITE) that says where it is served is a delegation: RC 302
  SERVICE_REFERRAL. The library follows a 302 for any request it sends
  (``sendRequestToService``): it takes the HS_SITE values of the answer, or else
  resolves the referral handle for them, and sends the same request there.
* ``0.NA/X`` whose nearest proper ancestor of X that says where it is served (its
  HS_SITE.PREFIX, else HS_SITE) is a delegation: RC 303 (the library's RC_NA_DELEGATE),
  which the library follows only where it looks a prefix up (``getServiceInfoForNA``):
  it asks the referred sites for ``0.NA/X`` again.
* a prefix named without ``0.NA/`` (``88.166.1001``), as the library asks the referred
  sites after a 303: a 303 likewise when under a delegation, else the HS_SITE values of
  where it is served (the delegation's, or this node's for a prefix homed here).
* anything else (``0.NA/D`` itself, a record held here, included): answered here.

The reference server itself (HandleServer.java) never sends either code; it answers
every handle under a homed prefix locally. This is the part of the reference
hierarchy (its global service) that idnode's top-level and secondary roles play.

One small map per worker, like :class:`~idnode.registry.names.PrefixAuthority`: built
from the registry's prefix records (``Store.prefix_records``) and replaced whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace

from idnode.resolver.codec import HandleValue, ProtocolError, decode_values, encode_values
from idnode.resolver.codec.codes import (
    TYPE_SERV,
    TYPE_SITE,
    TYPE_SITE6,
    TYPE_SITE_PREFIX,
    InterfaceProtocol,
    ResponseCode,
)
from idnode.resolver.codec.hs_site import ServerInfo, address_to_text, decode_site

from .names import NA_PREFIX, PrefixAuthority, is_prefix_handle, normalize, prefix_of

SITE_TYPES = frozenset({TYPE_SITE, TYPE_SITE6})  # what the library's referral code reads
SERVICE_TYPE = TYPE_SERV
DERIVED_TYPE = TYPE_SITE_PREFIX  # where the derived prefixes are (HANDLE.NET 8.x)


@dataclass(frozen=True, slots=True)
class Delegation:
    """Where a delegated prefix is served."""

    prefix: str  # as registered, e.g. 88.166.1001
    referral_handle: str  # 0.NA/<prefix>, or the HS_SERV service handle
    sites_wire: bytes  # int4 n + the HS_SITE values clients are sent to (n may be 0)
    where: str  # "host:port, ..." of the sites' Handle TCP interfaces, for people

    def describe(self) -> str:
        return f"{self.prefix} is served elsewhere: ask {self.where or self.referral_handle}"


@dataclass(frozen=True, slots=True)
class _Here:
    """Served by this node: a homed prefix, or a record whose sites name this node."""

    sites_wire: bytes | None  # its HS_SITE values (int4 n + values), when known


@dataclass(frozen=True, slots=True)
class Referral:
    """The answer a handle under a delegation gets."""

    response_code: int  # 302 or 303
    delegation: Delegation


def _servers(values: Iterable[HandleValue]) -> Iterator[ServerInfo]:
    """The servers of every site value that decodes (one that does not is passed by)."""
    for v in values:
        try:
            site = decode_site(v.data)
        except ProtocolError:
            continue
        yield from site.servers


def site_addresses(values: Iterable[HandleValue]) -> str:
    """ "host:port, ..." of the Handle TCP interfaces the site values name, for people."""
    out = []
    for s in _servers(values):
        ports = sorted({i.port for i in s.interfaces if i.protocol == 1})  # TCP
        out += [f"{address_to_text(s.address)}:{p}" for p in ports]
    return ", ".join(out)


def site_values(values: Iterable[HandleValue]) -> list[HandleValue]:
    return [v for v in values if v.type in SITE_TYPES]


def derived_values(values: Iterable[HandleValue]) -> list[HandleValue]:
    """The HS_SITE.PREFIX values, retyped HS_SITE: what a referral to them carries."""
    return [replace(v, type=TYPE_SITE) for v in values if v.type == DERIVED_TYPE]


def endpoints(values: Iterable[HandleValue]) -> set[tuple[bytes, int]]:
    """(address, TCP port) of every server the site values name: how a node is known."""
    out = set()
    for s in _servers(values):
        out |= {(s.address, i.port) for i in s.interfaces if i.protocol == InterfaceProtocol.TCP}
    return out


def service_handle(values: Iterable[HandleValue]) -> str | None:
    for v in values:
        if v.type == SERVICE_TYPE:
            return v.data.decode("utf-8", "replace")
    return None


_Entry = Delegation | _Here


class Delegations:
    """The delegations of this node, by normalised prefix; replaced whole on reload."""

    def __init__(self, authority: PrefixAuthority) -> None:
        self.authority = authority  # the node's (replaced in place on refresh)
        self.case_sensitive = authority.case_sensitive
        # Where a prefix's own handles are (HS_SITE / HS_SERV), and where the prefixes
        # derived from it are (HS_SITE.PREFIX), by normalised prefix; a prefix in
        # neither says nothing about where it is served (its ancestors do).
        self._own: dict[str, _Entry] = {}
        self._derived: dict[str, _Entry] = {}
        self._any = False  # any delegation at all: most nodes have none

    def __len__(self) -> int:
        return len(self.all())

    def all(self) -> list[Delegation]:
        """Every delegation (of a prefix's handles or of its derived prefixes)."""
        return [
            d for m in (self._own, self._derived) for d in m.values() if isinstance(d, Delegation)
        ]

    @property
    def prefixes(self) -> frozenset[str]:
        return frozenset(d.prefix for d in self.all())

    def candidates(
        self, records: Iterable[tuple[str, bytes]]
    ) -> list[tuple[str, list[HandleValue]]]:
        """The prefix records that may be delegations: (prefix, values) of those under a
        homed prefix with HS_SITE.PREFIX values, or, not homed themselves, with HS_SITE
        or HS_SERV values."""
        homed = self.authority.homed
        out = []
        for handle, vals in records:
            prefix = prefix_of(handle)
            if not prefix or not self.authority.is_homed(prefix):
                continue
            try:
                values = list(decode_values(vals))
            except ProtocolError:
                continue
            if derived_values(values) or (
                normalize(prefix, self.case_sensitive) not in homed
                and (site_values(values) or service_handle(values) is not None)
            ):
                out.append((prefix, values))
        return out

    def own_sites(self, records: Iterable[tuple[str, bytes]]) -> dict[str, bytes]:
        """The HS_SITE values of the homed prefixes' records (this node's, as it
        publishes them), by normalised prefix."""
        homed = self.authority.homed
        out = {}
        for handle, vals in records:
            key = normalize(prefix_of(handle), self.case_sensitive)
            if key not in homed:
                continue
            try:
                sites = site_values(decode_values(vals))
            except ProtocolError:
                continue
            if sites:
                out[key] = encode_values(sites)
        return out

    def build(
        self,
        candidates: Iterable[tuple[str, list[HandleValue]]],
        services: dict[str, bytes],
        own: dict[str, bytes] | None = None,
    ) -> bool:
        """Replace the map; ``services``: value lists of the HS_SERV handles held here
        (normalised); ``own``: :meth:`own_sites`. Whether the delegations changed."""
        own = dict(own or {})
        ours = set()  # this node's servers, as its homed prefixes' records publish them
        for wire in own.values():
            ours |= endpoints(decode_values(wire))
        homed = self.authority.homed
        by_own: dict[str, _Entry] = {p: _Here(own.get(p)) for p in homed}
        by_derived: dict[str, _Entry] = {}

        def entry(prefix: str, referral: str, sites: list[HandleValue]) -> _Entry:
            wire = encode_values(sites)
            if ours & endpoints(sites):
                return _Here(wire)
            return Delegation(prefix, referral, wire, site_addresses(sites))

        for prefix, values in candidates:
            key = normalize(prefix, self.case_sensitive)
            derived = derived_values(values)
            if derived:
                by_derived[key] = entry(prefix, NA_PREFIX + prefix, derived)
            if key in homed:
                continue
            sites = site_values(values)
            referral = NA_PREFIX + prefix
            if not sites:
                service = service_handle(values)
                if service is None:
                    continue  # HS_SITE.PREFIX only: D's own handles stay where they were
                held = services.get(normalize(service, self.case_sensitive))
                try:
                    sites = site_values(decode_values(held)) if held else []
                except ProtocolError:
                    sites = []
                referral = service
            by_own[key] = entry(prefix, referral, sites)
        changed = (by_own, by_derived) != (self._own, self._derived)
        self._own, self._derived = by_own, by_derived
        self._any = bool(self.all())
        return changed

    def _served(self, prefix: str, *, derived: bool) -> tuple[str, _Entry] | None:
        """The nearest record saying where handles of ``prefix`` (normalised) are: the
        prefix's own (HS_SITE), then each ancestor's for its derived prefixes
        (HS_SITE.PREFIX, else HS_SITE); ``derived``: start at the ancestors' rule for
        ``prefix`` itself (it names a derived prefix of its parent's, as in 0.NA/X)."""
        p = prefix
        while p:
            found = self._derived.get(p) if derived else None
            found = found or self._own.get(p)
            if found is not None:
                return p, found
            p = p.rpartition(".")[0]
            derived = True
        return None

    def referral(self, handle: str) -> Referral | None:
        """The referral ``handle`` gets here, or None (answered as before)."""
        if not self._any:
            return None
        key = normalize(handle, self.case_sensitive)
        slash = key.find("/")
        if is_prefix_handle(key) or slash < 0:
            named = key[5:] if slash >= 0 else key  # "88.166.1001" names the prefix too
            if named in self._derived or (named in self._own and named not in self.authority.homed):
                return None  # a record held here, delegating or not
            # Where the prefix it names is served: its nearest ancestor's record says.
            found = self._served(named.rpartition(".")[0], derived=True)
            code = ResponseCode.PREFIX_REFERRAL
        else:
            found = self._served(key[:slash], derived=False)
            code = ResponseCode.SERVICE_REFERRAL
        if found is None or isinstance(found[1], _Here):
            return None
        return Referral(int(code), found[1])

    def prefix_sites(self, handle: str) -> bytes | None:
        """For a prefix named without "0.NA/" ("88.166.1001", what the HANDLE.NET library
        asks the referred sites after a 303: HandleResolver.getServiceInfoForNA,
        makeSlashless): the HS_SITE values (``int4 n`` + values) of where it is served,
        a delegation's or this node's own; None when neither is known here."""
        key = normalize(handle, self.case_sensitive)
        if "/" in key:
            return None
        found = self._served(key, derived=False)
        if found is None:
            return None
        p, e = found
        if isinstance(e, _Here):
            return e.sites_wire
        return e.sites_wire if p == key else None  # deeper: a 303 (referral)

    def delegated(self, handle: str) -> bool:
        """Is ``handle`` (not a prefix handle) under a delegation, so served elsewhere?"""
        r = self.referral(handle)
        return r is not None and r.response_code == ResponseCode.SERVICE_REFERRAL
