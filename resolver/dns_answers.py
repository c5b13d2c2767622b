"""DNS messages out of the resolver core's answers (the DNS door's rendering, dnspython).

What a handle's name answers (README "DNS gateway"):

* TXT: one record per publicly readable value, "index type value" (the value as UTF-8
  text, or ``base64:`` and its base64 when it is not printable text), cut into
  character-strings of at most 255 octets;
* URI (RFC 7553): one per URL-typed value (``URL``, ``URL.*``), priority the index;
* NAPTR in the ONS manner: one per URL- or EMAIL-typed value, flags "u", service
  ``E2U+<type>`` (lower case), regexp ``!^.*$!<url>!`` (``mailto:`` for EMAIL);
* TTLs: the smallest of the values' in the RRset.

The zone apex answers SOA and NS (``ns1.<zone>``, with the node's address as its A or
AAAA). A delegated prefix's subtree gets a referral: NS records in the authority section
naming ``ns<N>._ns.<subtree>`` (a name no handle has: ``_ns`` is neither a plain label
nor base32), one per server of the referral's HS_SITE values, with glue A/AAAA records.
"""

from __future__ import annotations

import base64
import ipaddress
import re
import time
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.NS import NS
from dns.rdtypes.ANY.SOA import SOA
from dns.rdtypes.ANY.TXT import TXT
from dns.rdtypes.ANY.URI import URI
from dns.rdtypes.IN.A import A
from dns.rdtypes.IN.AAAA import AAAA
from dns.rdtypes.IN.NAPTR import NAPTR

from .codec import HandleValue, decode_site, decode_values
from .codec.codes import TtlType

IN = dns.rdataclass.IN
T = dns.rdatatype
MAX_TTL = 2**31 - 1
TXT_CHUNK = 255
UDP_CAP = 1232  # the largest UDP answer: no IP fragments on any usual path (DNS flag day 2020)
UDP_PLAIN = 512  # a client without EDNS
TCP_CAP = 65_535
URL_TYPES = ("URL",)
_SERVICE_CHARS = re.compile(r"[^a-z0-9]+")


@dataclass(frozen=True)
class Zone:
    """The zone the gateway is authoritative for, and what its apex says."""

    origin: dns.name.Name
    nameserver: dns.name.Name
    hostmaster: dns.name.Name
    address: str  # the nameserver's address (the node's advertised address)
    serial: int = 1
    negative_ttl: int = 5  # SOA minimum: how long resolvers cache "no such name"
    ttl: int = 3600  # the apex records'
    case_sensitive: bool = False

    @classmethod
    def of(
        cls,
        zone: str,
        address: str,
        *,
        nameserver: str = "",
        hostmaster: str = "",
        serial: int = 1,
        negative_ttl: float = 5.0,
        case_sensitive: bool = False,
    ) -> Zone:
        origin = dns.name.from_text(zone)
        return cls(
            origin,
            dns.name.from_text(nameserver, origin) if nameserver else _child("ns1", origin),
            dns.name.from_text(hostmaster, origin) if hostmaster else _child("hostmaster", origin),
            address,
            serial,
            max(0, int(negative_ttl)),
            case_sensitive=case_sensitive,
        )

    @property
    def text(self) -> str:
        return self.origin.to_text()

    def soa(self) -> dns.rrset.RRset:
        rd = SOA(  # type: ignore[no-untyped-call]
            IN,
            T.SOA,
            self.nameserver,
            self.hostmaster,
            self.serial,
            3600,
            600,
            86400,
            self.negative_ttl,
        )
        return _rrset(self.origin, self.negative_ttl, [rd])

    def ns(self) -> dns.rrset.RRset:
        return _rrset(self.origin, self.ttl, [NS(IN, T.NS, self.nameserver)])  # type: ignore[no-untyped-call]

    def glue(self) -> list[dns.rrset.RRset]:
        return [_rrset(self.nameserver, self.ttl, [_address(self.address)])]


def _child(label: str, parent: dns.name.Name) -> dns.name.Name:
    return dns.name.Name((label.encode(), *parent.labels))


def _address(ip: str) -> dns.rdata.Rdata:
    if ipaddress.ip_address(ip).version == 4:
        return A(IN, T.A, ip)  # type: ignore[no-untyped-call]
    return AAAA(IN, T.AAAA, ip)  # type: ignore[no-untyped-call]


def _rrset(name: dns.name.Name, ttl: int, rdatas: list[dns.rdata.Rdata]) -> dns.rrset.RRset:
    rrset = dns.rrset.RRset(name, IN, rdatas[0].rdtype)
    for rd in rdatas:
        rrset.add(rd, ttl)
    rrset.update_ttl(ttl)
    return rrset


def value_ttl(v: HandleValue, now: float | None = None) -> int:
    """A value's TTL in seconds: relative as is; absolute, what is left of it."""
    if v.ttl_type == TtlType.ABSOLUTE:
        left = v.ttl - int(time.time() if now is None else now)
        return max(0, min(left, MAX_TTL))
    return max(0, min(v.ttl, MAX_TTL))


def value_text(v: HandleValue) -> str:
    """The value's data as TXT carries it: UTF-8 text, or ``base64:`` and its base64."""
    try:
        text = v.data.decode()
    except UnicodeDecodeError:
        text = None
    if text is None or not text.isprintable():
        return "base64:" + base64.b64encode(v.data).decode("ascii")
    return text


def txt_rdata(v: HandleValue) -> TXT:
    data = f"{v.index} {v.type} {value_text(v)}".encode()
    chunks = [data[i : i + TXT_CHUNK] for i in range(0, len(data), TXT_CHUNK)] or [b""]
    return TXT(IN, T.TXT, chunks)


def is_url(v: HandleValue) -> bool:
    return any(v.type_matches(t) or v.type_matches(t + ".") for t in URL_TYPES)


def _link(v: HandleValue) -> str | None:
    """The URI a value points at (for URI and NAPTR), or None."""
    try:
        text = v.data.decode().strip()
    except UnicodeDecodeError:
        return None
    if not text or not text.isprintable():
        return None
    if is_url(v):
        return text
    if v.type.upper() == "EMAIL":
        return text if text.startswith("mailto:") else "mailto:" + text
    return None


def _naptr(v: HandleValue, link: str) -> NAPTR:
    service = "E2U+" + _SERVICE_CHARS.sub(".", v.type.lower()).strip(".")
    # The delimiter must not occur in the URL; "!" as ONS writes it, else another.
    delim = next((d for d in "!|#~%" if d not in link), None)
    if delim is None:
        delim, link = "!", link.replace("\\", "\\\\").replace("!", "\\!")
    regexp = f"{delim}^.*${delim}{link}{delim}"
    order = min(v.index, 65_535) if v.index >= 0 else 65_535
    return NAPTR(IN, T.NAPTR, order, 0, b"u", service.encode(), regexp.encode(), dns.name.root)  # type: ignore[no-untyped-call]


def records(owner: dns.name.Name, values_wire: bytes, qtype: int) -> list[dns.rrset.RRset]:
    """The RRsets of ``qtype`` (TXT, URI, NAPTR, or ANY for all three) out of a
    handle's values; only publicly readable values are rendered."""
    values = [v for v in decode_values(values_wire) if v.public_read]
    out: list[dns.rrset.RRset] = []
    for rtype in (T.TXT, T.URI, T.NAPTR):
        if qtype not in (rtype, T.ANY):
            continue
        rds: list[dns.rdata.Rdata] = []
        ttls: list[int] = []
        for v in values:
            rd: dns.rdata.Rdata | None = None
            if rtype == T.TXT:
                rd = txt_rdata(v)
            elif (link := _link(v)) is not None:
                if rtype == T.URI and is_url(v):
                    rd = URI(IN, T.URI, min(max(v.index, 0), 65_535), 1, link.encode())  # type: ignore[no-untyped-call]
                elif rtype == T.NAPTR:
                    rd = _naptr(v, link)
            if rd is not None:
                rds.append(rd)
                ttls.append(value_ttl(v))
        if rds:
            out.append(_rrset(owner, min(ttls), rds))
    return out


def referral(cut: dns.name.Name, sites_wire: bytes, ttl: int = 3600) -> list[dns.rrset.RRset]:
    """The NS referral to a delegated prefix's subtree ``cut``: [NS, glue...] from the
    HS_SITE values (empty when they name no server)."""
    addresses: list[str] = []
    for v in decode_values(sites_wire):
        if v.type != "HS_SITE":
            continue
        try:
            site = decode_site(v.data)
        except Exception:  # a broken record refers nowhere; the others still may
            continue
        for server in site.servers:
            if server.ip not in addresses:
                addresses.append(server.ip)
    if not addresses:
        return []
    hosts = [_child(f"ns{i}", _child("_ns", cut)) for i in range(1, len(addresses) + 1)]
    out = [_rrset(cut, ttl, [NS(IN, T.NS, h) for h in hosts])]  # type: ignore[no-untyped-call]
    out.extend(_rrset(h, ttl, [_address(ip)]) for h, ip in zip(hosts, addresses, strict=True))
    return out


def response(
    query: dns.message.Message, rcode: dns.rcode.Rcode = dns.rcode.NOERROR
) -> dns.message.Message:
    """An answer to ``query``: its id and question exactly as received (the case of the
    name too: 0x20), EDNS when the query had it (our payload UDP_CAP), AA set."""
    r = dns.message.make_response(query, our_payload=UDP_CAP)
    r.flags |= dns.flags.AA
    r.flags &= ~dns.flags.RA
    r.set_rcode(rcode)
    return r


def udp_limit(query: dns.message.Message) -> int:
    """The largest UDP answer this client takes: its EDNS buffer size (at least 512, at
    most UDP_CAP), or 512 without EDNS."""
    if query.edns < 0:
        return UDP_PLAIN
    return max(UDP_PLAIN, min(query.payload, UDP_CAP))


def to_wire(r: dns.message.Message, limit: int) -> bytes:
    """The answer in at most ``limit`` bytes: whole, or truncated (TC, the question and
    EDNS only) when it does not fit, so the client asks again over TCP."""
    try:
        return r.to_wire(max_size=limit)
    except dns.exception.TooBig:
        r.answer.clear()
        r.authority.clear()
        r.additional.clear()
        r.flags |= dns.flags.TC
        return r.to_wire(max_size=max(limit, UDP_PLAIN))


def header_error(packet: bytes, rcode: int) -> bytes | None:
    """A bare header answering a packet dnspython could not read: its id, opcode and RD,
    ``rcode``, no sections. None (silence) for what is no query: shorter than a header,
    or a response already (answering those could loop two servers)."""
    if len(packet) < 12 or packet[2] & 0x80:
        return None
    flags = 0x8000 | (packet[2] & 0x79) << 8 | (rcode & 0xF)
    return packet[:2] + flags.to_bytes(2, "big") + bytes(8)
