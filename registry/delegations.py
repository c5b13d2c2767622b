"""Delegations: prefixes under this node's homed prefixes that another node serves.

A delegation is a prefix record ``0.NA/<D>`` held in this registry whose values say where
D is served (HS_SITE / HS_SITE.6 values, or HS_SERV naming a service handle whose HS_SITE
values are the service), where D is covered by a homed prefix but is not homed itself.
A top-level node homes ``88`` and holds ``0.NA/88.166`` pointing at the secondary node; a
secondary homes ``88.166`` and holds ``0.NA/88.166.1001`` pointing at an enterprise node.

Which answer a handle gets (:meth:`Delegations.referral`), as the HANDLE.NET 7.3.1
library follows referrals (net/handle/hdllib/HandleResolver.java):

* ``P/suffix`` whose longest homed-or-delegated prefix (P itself or an ancestor) is a
  delegation: RC 302 SERVICE_REFERRAL. The library follows a 302 for any request it
  sends (``sendRequestToService``): it takes the HS_SITE values of the answer, or else
  resolves the referral handle for them, and sends the same request there.
* ``0.NA/X`` whose longest homed-or-delegated proper ancestor of X is a delegation:
  RC 303 (the library's RC_NA_DELEGATE), which the library follows only where it looks
  a prefix up (``getServiceInfoForNA``): it asks the referred sites for ``0.NA/X`` again.
* a prefix named without ``0.NA/`` (``88.166.1001``), as the library asks the referred
  sites after a 303: a 303 likewise when under a delegation, else the HS_SITE values of
  where it is served (the delegation's, or this node's for a prefix homed here).
* anything else (``0.NA/D`` itself included): answered here as before.

The reference server itself (HandleServer.java) never sends either code; it answers
every handle under a homed prefix locally. This is the part of the reference
hierarchy (its global service) that idnode's top-level and secondary roles play.

One small map per worker, like :class:`~idnode.registry.names.PrefixAuthority`: built
from the registry's prefix records (``Store.prefix_records``) and replaced whole.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from idnode.resolver.codec import HandleValue, ProtocolError, decode_values, encode_values
from idnode.resolver.codec.codes import TYPE_SERV, TYPE_SITE, TYPE_SITE6, ResponseCode
from idnode.resolver.codec.hs_site import address_to_text, decode_site

from .names import NA_PREFIX, PrefixAuthority, normalize, prefix_of

SITE_TYPES = frozenset({TYPE_SITE, TYPE_SITE6})  # what the library's referral code reads
SERVICE_TYPE = TYPE_SERV


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
class Referral:
    """The answer a handle under a delegation gets."""

    response_code: int  # 302 or 303
    delegation: Delegation


def _where(values: Iterable[HandleValue]) -> str:
    out = []
    for v in values:
        try:
            site = decode_site(v.data)
        except ProtocolError:
            continue
        for s in site.servers:
            ports = sorted({i.port for i in s.interfaces if i.protocol == 1})  # TCP
            out += [f"{address_to_text(s.address)}:{p}" for p in ports]
    return ", ".join(out)


def site_values(values: Iterable[HandleValue]) -> list[HandleValue]:
    return [v for v in values if v.type in SITE_TYPES]


def service_handle(values: Iterable[HandleValue]) -> str | None:
    for v in values:
        if v.type == SERVICE_TYPE:
            return v.data.decode("utf-8", "replace")
    return None


class Delegations:
    """The delegations of this node, by normalised prefix; replaced whole on reload."""

    def __init__(self, authority: PrefixAuthority) -> None:
        self.authority = authority  # the node's (replaced in place on refresh)
        self.case_sensitive = authority.case_sensitive
        self._by_prefix: dict[str, Delegation] = {}
        self._homed: frozenset[str] = authority.homed  # as of the last build
        self._own: dict[str, bytes] = {}  # homed prefix -> its record's HS_SITE values

    def __len__(self) -> int:
        return len(self._by_prefix)

    @property
    def prefixes(self) -> frozenset[str]:
        return frozenset(d.prefix for d in self._by_prefix.values())

    def candidates(
        self, records: Iterable[tuple[str, bytes]]
    ) -> list[tuple[str, list[HandleValue]]]:
        """The prefix records that may be delegations: (prefix, values) of those under a
        homed prefix, not homed themselves, with HS_SITE or HS_SERV values."""
        homed = self.authority.homed
        out = []
        for handle, vals in records:
            prefix = prefix_of(handle)
            key = normalize(prefix, self.case_sensitive)
            if not prefix or key in homed or not self.authority.is_homed(prefix):
                continue
            try:
                values = list(decode_values(vals))
            except ProtocolError:
                continue
            if site_values(values) or service_handle(values) is not None:
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
        found: dict[str, Delegation] = {}
        for prefix, values in candidates:
            sites = site_values(values)
            referral = NA_PREFIX + prefix
            if not sites:
                service = service_handle(values) or ""
                held = services.get(normalize(service, self.case_sensitive))
                try:
                    sites = site_values(decode_values(held)) if held else []
                except ProtocolError:
                    sites = []
                referral = service
            found[normalize(prefix, self.case_sensitive)] = Delegation(
                prefix, referral, encode_values(sites), _where(sites)
            )
        changed = found != self._by_prefix
        self._by_prefix = found
        self._homed = self.authority.homed
        self._own = dict(own or {})
        return changed

    def referral(self, handle: str) -> Referral | None:
        """The referral ``handle`` gets here, or None (answered as before)."""
        if not self._by_prefix:
            return None
        key = normalize(handle, self.case_sensitive)
        slash = key.find("/")
        if key[:5].upper() == NA_PREFIX.upper() or slash < 0:
            named = key[5:] if slash >= 0 else key  # "88.166.1001" names the prefix too
            if named in self._by_prefix:
                return None  # the delegation record itself: held here
            p = named.rpartition(".")[0]  # the proper ancestors of the prefix it names
            code = ResponseCode.PREFIX_REFERRAL
        else:
            p = key[:slash]
            code = ResponseCode.SERVICE_REFERRAL
        homed = self._homed
        while p:
            d = self._by_prefix.get(p)
            if d is not None:
                return Referral(int(code), d)
            if p in homed:
                return None
            p = p.rpartition(".")[0]
        return None

    def prefix_sites(self, handle: str) -> bytes | None:
        """For a prefix named without "0.NA/" ("88.166.1001", what the HANDLE.NET library
        asks the referred sites after a 303: HandleResolver.getServiceInfoForNA,
        makeSlashless): the HS_SITE values (``int4 n`` + values) of where it is served,
        a delegation's or this node's own; None when neither is known here."""
        key = normalize(handle, self.case_sensitive)
        if "/" in key:
            return None
        p = key
        while p:
            d = self._by_prefix.get(p)
            if d is not None:
                return d.sites_wire if p == key else None  # deeper: a 303 (referral)
            if p in self._homed:
                return self._own.get(p)
            p = p.rpartition(".")[0]
        return None

    def delegated(self, handle: str) -> bool:
        """Is ``handle`` (not a prefix handle) under a delegation, so served elsewhere?"""
        r = self.referral(handle)
        return r is not None and r.response_code == ResponseCode.SERVICE_REFERRAL
