"""The DNS gateway: DNS over UDP and TCP in, the resolver core, DNS answers out.

A question's name maps to a handle (codec/dns_names.py), the core resolves it as for
every other door (public values only), and dns_answers.py renders the result:

* values -> the RRsets of the asked type, or NODATA (NOERROR, SOA in authority);
* "handle not found" -> NXDOMAIN with the SOA; but a name that is the subtree of a
  prefix homed here or of an ancestor of one (``88.<zone>``, ``166.88.<zone>``) is an
  empty non-terminal: NODATA, so resolvers that minimise query names walk down to it;
* a referral (302/303), or a name that is the subtree of a prefix delegated elsewhere ->
  an NS referral with glue from the HS_SITE values;
* "not served here" (301) or a suspended prefix -> REFUSED; names outside the zone ->
  REFUSED; any other failure of the core -> SERVFAIL.

Unverified UDP sources get at most their EDNS buffer size (512 without EDNS, at most
1232), else TC and the client asks over TCP; and UDP answers to one source network are
rate-limited in bytes as the Handle UDP door's (udp_door.ResponseRateLimiter): past the
budget an answer is dropped, or every ``slip``-th is a bare TC. TCP is bounded like the
Handle TCP door: connections per client (connlimits.ConnectionLimits), an idle timeout,
a timeout for a query that is slow to arrive, one query answered at a time.

Malformed packets get FORMERR when their header is readable and silence otherwise;
several questions get FORMERR; an opcode other than QUERY, NOTIMP; a zone transfer
(AXFR, IXFR: no zone is transferred), REFUSED.

Hot names are answered without dnspython (dns_fast.py): the answers this path renders
from L1 entries (values, NODATA, NXDOMAIN of a name no prefix has, the apex) are kept as
wire bytes while those L1 entries stand, and a repeated plain UDP query gets them with
its id and question patched in (rate-limited like any other answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from idnode.registry.names import PrefixAuthority, normalize

from . import metrics
from .codec import decode_values
from .codec.codes import ResponseCode
from .codec.dns_names import name_to_handle, name_to_prefix, prefix_to_name
from .connlimits import ConnectionLimits
from .core import Resolution, Resolver, answer
from .dns_answers import (
    TCP_CAP,
    UDP_CAP,
    Zone,
    header_error,
    records,
    referral,
    response,
    to_wire,
    udp_limit,
)
from .dns_fast import Dependency, WireCache
from .l1 import Entry
from .settings import ConfigError, Settings
from .udp_door import ResponseRateLimiter, parse_networks

log = logging.getLogger("idnode.dns")

T = dns.rdatatype
RC = ResponseCode
MAX_INFLIGHT = 10_000  # UDP queries awaiting the core; past it new ones are dropped
REFUSED_CODES = {RC.SERVER_NOT_RESPONSIBLE_FOR_HANDLE, RC.PREFIX_LIMIT}
HANDLE_TYPES = {T.TXT, T.URI, T.NAPTR, T.ANY}
ZONE_TRANSFERS = {T.AXFR, T.IXFR}
CACHED_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)

# What the resolution of one query read: the answer, and the L1 entries it was made from
# (None: not to be kept, as it depends on something the wire cache cannot check).
Traced = tuple[dns.message.Message, tuple[Dependency, ...] | None]


class DnsService:
    """What the UDP and TCP listeners share: a query's bytes in, its answer's out."""

    def __init__(
        self,
        core: Resolver,
        zone: Zone,
        skeleton: Callable[[str], bool] = lambda prefix: False,
    ) -> None:
        self.core = core
        self.zone = zone
        # Whether a prefix is homed here or an ancestor of one (an empty non-terminal).
        self.skeleton = skeleton
        # Answers as wire bytes for the UDP door's fast path (dns_fast.py).
        self.wire_cache = WireCache(core.cached)

    async def answer(self, packet: bytes, limit: int | None, transport: str) -> bytes | None:
        """The answer to one query; ``limit``: the UDP size to fit (None over TCP)."""
        try:
            query = dns.message.from_wire(packet)
        except Exception:  # whatever dnspython cannot read: never a crash
            reply = header_error(packet, dns.rcode.FORMERR)
            self._count(transport, dns.rcode.FORMERR if reply else -1)
            return reply
        if query.flags & 0x8000:
            return None  # a response, not a query: answering could loop two servers
        depends: tuple[Dependency, ...] | None = None  # what a kept answer was made from
        if query.opcode() != dns.opcode.QUERY:
            r = response(query, dns.rcode.NOTIMP)
        elif len(query.question) != 1:
            r = response(query, dns.rcode.FORMERR)
        elif query.question[0].rdtype in ZONE_TRANSFERS:
            r = response(query, dns.rcode.REFUSED)
        else:
            try:
                r, depends = await self.traced(query)
            except Exception:  # a bug must cost one answer, never the server
                log.exception("error answering a DNS query")
                r, depends = response(query, dns.rcode.SERVFAIL), None
        size = TCP_CAP if limit is None else min(limit, udp_limit(query))
        self._count(transport, r.rcode())
        wire = to_wire(r, size)
        if depends is not None:
            self._keep(packet, r, wire, depends)
        return wire

    def _keep(
        self,
        packet: bytes,
        r: dns.message.Message,
        wire: bytes,
        depends: tuple[Dependency, ...],
    ) -> None:
        """Keep an authoritative, whole, positive or negative answer for the fast path
        (not TC: its size is the client's; not referrals or failures)."""
        if r.flags & dns.flags.TC or not r.flags & dns.flags.AA or r.rcode() not in CACHED_RCODES:
            return
        ttls = [s.ttl for s in (*r.answer, *r.authority, *r.additional)]
        if not ttls:
            return
        count = metrics.DNS_ANSWERS.labels("udp", dns.rcode.to_text(r.rcode())).inc
        self.wire_cache.put(packet, wire, min(ttls), depends, count)

    def _count(self, transport: str, rcode: int) -> None:
        text = dns.rcode.to_text(rcode) if rcode >= 0 else "SILENCE"  # type: ignore[arg-type]
        metrics.DNS_ANSWERS.labels(transport, text).inc()

    async def resolve(self, query: dns.message.Message) -> dns.message.Message:
        return (await self.traced(query))[0]

    async def traced(self, query: dns.message.Message) -> Traced:
        """The answer, and what it was made from (for the wire cache)."""
        q = query.question[0]
        zone = self.zone
        cs = zone.case_sensitive
        if q.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            return response(query, dns.rcode.REFUSED), None
        if not q.name.is_subdomain(zone.origin):
            return response(query, dns.rcode.REFUSED), None
        if q.name == zone.origin:
            return self._apex(query, q.name, q.rdtype), ()  # the zone's settings alone
        if q.name == zone.nameserver:
            r = response(query)
            if q.rdtype in (T.A, T.AAAA, T.ANY):
                r.answer.extend(x for x in zone.glue() if x.rdtype == q.rdtype or q.rdtype == T.ANY)
            if not r.answer:
                r.authority.append(zone.soa())
            return r, ()
        name = q.name.to_text()
        handle = name_to_handle(name, zone.text, case_sensitive=cs)
        got: Resolution | None = None
        depends: tuple[Dependency, ...] | None = None
        if handle is not None:
            # core.entry and answer() are core.resolve, keeping the L1 entry in hand:
            # the wire cache serves this answer only while L1 still holds that object.
            e = await self.core.entry(handle)
            if isinstance(e, Entry):
                got, depends = answer(e, (), ()), ((handle, e),)
            else:
                got = e
            if got.response_code == RC.SUCCESS:
                return self._values(query, q.name, q.rdtype, got.values_wire), depends
            if got.response_code == RC.VALUES_NOT_FOUND:
                return self._nodata(query), depends
            if got.is_referral:
                return self._referral(query, got), None
            if got.response_code not in REFUSED_CODES | {RC.HANDLE_NOT_FOUND}:
                return response(query, dns.rcode.SERVFAIL), None
        # Not a handle held here: the top of a prefix's subtree?
        prefix = name_to_prefix(name, zone.text, case_sensitive=cs)
        if prefix is not None:
            # (not kept: which prefixes are homed here is not an L1 entry to check)
            if self.skeleton(prefix):
                return self._nodata(query), None
            cut = await self.core.resolve(f"0.NA/{prefix}")
            if cut.is_referral:
                return self._referral(query, cut), None
            if cut.response_code == RC.SUCCESS and _has_site(cut):
                # the prefix's own record, delegating it to another node's site
                held = Resolution(RC.PREFIX_REFERRAL, cut.values_wire, "", f"0.NA/{prefix}")
                return self._referral(query, held), None
            depends = None
        if got is not None and got.response_code in REFUSED_CODES:
            return response(query, dns.rcode.REFUSED), None  # not ours, no referral known
        return self._nxdomain(query), depends

    def _apex(
        self, query: dns.message.Message, qname: dns.name.Name, qtype: int
    ) -> dns.message.Message:
        r = response(query)
        if qtype in (T.SOA, T.ANY):
            r.answer.append(_renamed(self.zone.soa(), qname))
        if qtype in (T.NS, T.ANY):
            r.answer.append(_renamed(self.zone.ns(), qname))
            r.additional.extend(self.zone.glue())
        if not r.answer:
            r.authority.append(self.zone.soa())
        return r

    def _values(
        self, query: dns.message.Message, qname: dns.name.Name, qtype: int, wire: bytes
    ) -> dns.message.Message:
        found = records(qname, wire, qtype) if qtype in HANDLE_TYPES else []
        if not found:
            return self._nodata(query)
        r = response(query)
        r.answer.extend(found)
        return r

    def _nodata(self, query: dns.message.Message) -> dns.message.Message:
        r = response(query)
        r.authority.append(self.zone.soa())
        return r

    def _nxdomain(self, query: dns.message.Message) -> dns.message.Message:
        r = response(query, dns.rcode.NXDOMAIN)
        r.authority.append(self.zone.soa())
        return r

    def _referral(self, query: dns.message.Message, got: Resolution) -> dns.message.Message:
        prefix = got.referral[5:] if got.referral[:5].upper() == "0.NA/" else got.referral
        cut_text = prefix_to_name(prefix, self.zone.text, case_sensitive=self.zone.case_sensitive)
        sets = referral(dns.name.from_text(cut_text), got.values_wire) if cut_text else []
        if not sets:
            return response(query, dns.rcode.REFUSED)  # delegated, but to no address we know
        r = response(query)
        r.flags &= ~dns.flags.AA  # a referral is not an authoritative answer
        r.authority.append(sets[0])
        r.additional.extend(sets[1:])
        return r


def _has_site(r: Resolution) -> bool:
    return any(v.type == "HS_SITE" for v in decode_values(r.values_wire))


def _renamed(rrset: Any, qname: dns.name.Name) -> Any:
    """The apex RRset owned by the question's name exactly as asked (0x20)."""
    rrset.name = qname
    return rrset


class DnsDoor(asyncio.DatagramProtocol):
    """DNS over UDP, one socket of one worker."""

    def __init__(self, service: DnsService, rrl: ResponseRateLimiter | None = None) -> None:
        self.service = service
        self.rrl = rrl
        self.transport: asyncio.DatagramTransport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def fast_answer(self, packet: bytes, addr: Any) -> bytes | None:
        """The synchronous fast path (dns_fast.WireCache: answers kept as wire bytes per
        question, the id and the question's case patched in): bytes to send at once, or
        None for the dnspython path."""
        return self.service.wire_cache.answer(packet)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.closing:
            return
        fast = self.fast_answer(data, addr)
        if fast is not None:
            self._send(fast, addr, data)
            return
        if len(self.tasks) >= MAX_INFLIGHT:
            return  # shed: a client asks again
        t = asyncio.get_running_loop().create_task(self._answer(data, addr))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _answer(self, data: bytes, addr: Any) -> None:
        try:
            reply = await self.service.answer(data, UDP_CAP, "udp")
        except Exception:  # a bug must cost one answer, never the server
            log.exception("error answering a DNS UDP query")
            return
        if reply is not None:
            self._send(reply, addr, data)

    def _send(self, reply: bytes, addr: Any, query: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if self.rrl is not None:
            ok = self.rrl.allow(addr[0], len(reply), time.monotonic())
            if ok is None:
                reply = _slip(reply)
            elif not ok:
                return
        self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("dns udp error: %s", exc)

    async def drain_and_close(self, grace: float) -> None:
        self.closing = True
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=grace)
        if self.transport is not None:
            self.transport.close()


def _slip(reply: bytes) -> bytes:
    """Over the rate: the answer's header alone with TC set (ask over TCP)."""
    flags = int.from_bytes(reply[2:4], "big") | 0x0200
    return reply[:2] + flags.to_bytes(2, "big") + bytes(8)


class DnsTcp:
    """DNS over TCP (two-byte length before each message), bounded per connection."""

    def __init__(
        self,
        service: DnsService,
        limits: ConnectionLimits,
        *,
        idle_timeout: float = 120.0,
        slow_timeout: float = 30.0,
    ) -> None:
        self.service = service
        self.limits = limits
        self.idle_timeout = idle_timeout
        self.slow_timeout = slow_timeout
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[Any]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        client = peer[0] if peer else ""
        if not self.limits.admit(client, "dns"):
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self.connections.add(task)
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                n = int.from_bytes(head, "big")
                packet = await asyncio.wait_for(reader.readexactly(n), self.slow_timeout)
                reply = await self.service.answer(packet, None, "tcp")
                if reply is None:
                    continue
                writer.write(len(reply).to_bytes(2, "big") + reply)
                await asyncio.wait_for(writer.drain(), self.slow_timeout)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass  # idle, slow, or gone: the connection ends
        except Exception:  # a bug must cost one connection, never the server
            log.exception("error on a DNS TCP connection")
        finally:
            self.limits.release(client)
            if task is not None:
                self.connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def drain_and_close(self, grace: float) -> None:
        if self.server is not None:
            self.server.close()
        if self.connections:
            await asyncio.wait(self.connections, timeout=grace)
        for t in list(self.connections):
            t.cancel()


def skeleton_of(authority: PrefixAuthority) -> Callable[[str], bool]:
    """Whether a prefix is homed here or an ancestor of one (``88`` when ``88.166`` is)."""

    def skeleton(prefix: str) -> bool:
        p = normalize(prefix, authority.case_sensitive)
        return any(h == p or h.startswith(p + ".") for h in authority.homed)

    return skeleton


async def start_dns(
    core: Resolver,
    authority: PrefixAuthority,
    s: Settings,
    udp_sock: socket.socket,
    tcp_sock: socket.socket,
    limits: ConnectionLimits,
) -> tuple[DnsDoor, DnsTcp]:
    """The DNS gateway on this worker's sockets, as the settings shape it."""
    try:
        zone = Zone.of(
            s.dns_zone,
            s.site_address,
            nameserver=s.dns_nameserver,
            hostmaster=s.dns_hostmaster,
            serial=s.site_serial,
            negative_ttl=s.negative_ttl,
            case_sensitive=s.case_sensitive,
        )
    except (dns.exception.DNSException, ValueError) as exc:
        raise ConfigError(f"dns_zone, dns_nameserver or dns_hostmaster: {exc}") from None
    service = DnsService(core, zone, skeleton_of(authority))
    rrl = None
    if s.udp_rrl_bytes > 0:  # the Handle UDP door's limit, for the same reason
        exempt = parse_networks(s.udp_rrl_exempt)
        rrl = ResponseRateLimiter(s.udp_rrl_bytes, slip=s.udp_rrl_slip, exempt=exempt)
    udp = DnsDoor(service, rrl)
    loop = asyncio.get_running_loop()
    await loop.create_datagram_endpoint(lambda: udp, sock=udp_sock)
    tcp = DnsTcp(service, limits, idle_timeout=s.tcp_idle_timeout, slow_timeout=s.tcp_slow_timeout)
    tcp.server = await asyncio.start_server(tcp.serve, sock=tcp_sock)
    log.info("DNS gateway: zone %s on udp+tcp %s:%d", zone.text, s.listen, s.dns_port)
    return udp, tcp


__all__ = ["DnsDoor", "DnsService", "DnsTcp", "Zone", "start_dns"]
