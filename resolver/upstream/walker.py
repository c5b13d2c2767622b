"""Resolve any handle from a root site, as the reference client (HandleResolver) does.

1. The service of a prefix lives in ``0.NA/<prefix>``, asked of the root. Its HS_SITE
   values are the sites; with none, an HS_SERV value names a service handle whose HS_SITE
   values are. A derived prefix the root does not know (``88.166`` when only ``0.NA/88``
   exists) is looked up parent first: ``0.NA/88`` at the root, then ``0.NA/88.166`` at the
   sites it names (its HS_NA_DELEGATE / HS_SITE.PREFIX sites when it has them).
2. Within a site the handle's hash picks the one server to ask (SiteInfo.determineServer);
   UDP first, TCP when UDP fails or the answer says "ask over TCP" (RC 2, which idnode's
   UDP door answers past its datagram cap) or is truncated (exchange.ask_server).
3. A server that does not answer in ``timeout`` is left for the next site.
4. RC 302/303 answers are referrals: the sites in their body, or those of their referral
   handle. At most ``max_referrals`` are followed (then RC 6), and a site asked twice for
   the same handle in one walk is a loop (RC 6 too, said as a loop): a walk always ends.
5. A prefix whose service lookup comes back to itself (an HS_SERV naming a handle of the
   same prefix, two prefixes naming each other's, HS_SERV met while a derived prefix is
   looked up) is a loop too (RC 6): a walk never waits on a lookup it started itself.
6. What one walk may cost is bounded, whatever the records it meets say: at most
   ``MAX_SITES_PER_HOP`` sites are tried per hop (primary first), at most
   ``max_requests`` requests are sent in all (UDP and TCP each count), every level of a
   derived prefix counts as a referral, and the whole walk ends after ``walk_timeout``
   (3 x ``timeout`` unless given). A hostile referral naming a thousand sites cannot
   make the node send a thousand requests.

Site lists are cached by prefix for the TTL of the values they came from, in a bounded
LRU, so a busy node asks the root once per prefix per TTL, not once per handle.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace

from idnode.registry.names import NA_PREFIX, prefix_of

from ..client import ClientError, resolution_request
from ..codec import (
    HandleValue,
    Message,
    OpFlag,
    ProtocolError,
    ReferralResponse,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
)
from ..codec.codes import TtlType, rc_name
from ..codec.credential import HS_DSAPUBKEY, HS_SIGNED, decode_credential, signed_prefix
from ..codec.message import header_and_body
from ..codec.sitehash import responsible_server
from .exchange import Answer, Unanswered, ask_server
from .sites import (
    DELEGATE_TYPES,
    LOCATION_TYPES,
    SERVICE_TYPES,
    TYPE_SERV,
    site_identity,
    site_label,
    sites_from_values,
)

REFERRALS = (ResponseCode.SERVICE_REFERRAL, ResponseCode.PREFIX_REFERRAL)
# Answers that say "not this site" rather than anything about the handle: another site
# of the same service (a mirror) may still answer.
TRY_ANOTHER_SITE = (
    ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE,
    ResponseCode.SERVER_TOO_BUSY,
    ResponseCode.SERVER_BACKUP,
)
OUR_VERSION = (2, 10)
MAX_SITES_PER_HOP = 4  # sites tried for one request (a referral may name hundreds)
MAX_REQUESTS = 16  # requests one walk sends in all


class WalkError(ClientError):
    """The walk ended without an answer; ``rc`` is the response code a node would give
    its own client for it (RC 6 for a referral loop or too many referrals)."""

    def __init__(self, rc: int, message: str, hops: Sequence[Hop] = ()) -> None:
        super().__init__(message)
        self.rc = rc
        self.hops = tuple(hops)
        # True when the walk ended while finding the prefix's service (no service, a
        # service loop): the same outcome for every handle of that prefix.
        self.prefix_level = False


@dataclass(frozen=True, slots=True)
class Hop:
    """One request sent (HDLTrace's lines)."""

    number: int
    handle: str
    site: str
    server: str  # host:port
    transport: str
    response_code: int | None  # None: no usable answer
    note: str = ""

    def __str__(self) -> str:
        got = rc_name(self.response_code) if self.response_code is not None else "no answer"
        tail = f" ({self.note})" if self.note else ""
        return (
            f"hop {self.number}: {self.handle} -> {self.server}/{self.transport} "
            f"{self.site}: {got}{tail}"
        )


@dataclass(frozen=True, slots=True)
class WalkResult:
    message: Message  # the final answer (any response code but a referral)
    site: SiteInfo
    server: ServerInfo
    hops: tuple[Hop, ...]


@dataclass
class _Walk:
    """What one walk has done: its hops, referrals followed and (site, handle) asked."""

    trace: Callable[[Hop], None] | None
    hops: list[Hop] = field(default_factory=list)
    referrals: int = 0
    # The recursionCount of the request that started the walk: a node resolving for a
    # client (recursion) passes its client's count + 1, so nodes that refer to each other
    # and recurse see the count grow and stop (RC 6).
    base: int = 0
    asked: set[tuple[object, str]] = field(default_factory=set)
    # The prefix handles whose service this walk is looking up now: meeting one again
    # is a loop (waiting on it would be waiting on itself).
    pending: set[str] = field(default_factory=set)
    requests: int = 0  # sent so far (UDP and TCP each count)

    def hop(self, hop: Hop) -> None:
        self.hops.append(hop)
        if self.trace is not None:
            self.trace(hop)


class SiteCache:
    """Site lists by prefix handle, each until its values' TTL runs out; bounded LRU."""

    def __init__(self, max_entries: int = 1024, clock: Callable[[], float] = time.monotonic):
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, tuple[SiteInfo, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> tuple[SiteInfo, ...] | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, sites = hit
        if expires <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return sites

    def put(self, key: str, sites: tuple[SiteInfo, ...], ttl: float) -> None:
        if ttl <= 0 or self.max_entries <= 0:
            return
        self._entries[key] = (self.clock() + ttl, sites)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)


def value_ttl(v: HandleValue, now: float | None = None) -> float:
    """Seconds a value may be kept: relative TTLs as they are; an absolute one is a Unix
    time, so what is left of it."""
    if v.ttl_type == TtlType.ABSOLUTE:
        return v.ttl - (time.time() if now is None else now)
    return float(v.ttl)


def prefix_handle(handle: str) -> str:
    """``0.NA/<prefix>`` for a handle; a handle without a slash names a prefix."""
    return NA_PREFIX + prefix_of(handle)


def is_global(handle: str) -> bool:
    """Handles the root itself holds: ``0.NA/...`` and the rest of the ``0`` namespace."""
    return handle.startswith(("0.", "0/"))


class Walker:
    def __init__(
        self,
        roots: Sequence[SiteInfo],
        *,
        timeout: float = 2.0,
        max_referrals: int = 8,
        cache: SiteCache | None = None,
        certify: bool = False,
        udp: bool = True,
        max_requests: int = MAX_REQUESTS,
        walk_timeout: float | None = None,
    ) -> None:
        if not roots:
            raise ValueError("a walker needs at least one root site")
        self.roots = tuple(roots)
        self.timeout = timeout
        self.max_referrals = max_referrals
        self.max_requests = max(1, max_requests)
        # No walk lives longer than this, whatever it meets (each server costs at most
        # ``timeout``; a walk that needs more than three of them is given up).
        self.walk_timeout = walk_timeout if walk_timeout is not None else 3 * timeout
        self.cache = cache if cache is not None else SiteCache()
        self.certify = certify
        self.udp = udp  # False: TCP only (a network that drops UDP, or --tcp)
        self._pending: dict[str, asyncio.Future[tuple[SiteInfo, ...]]] = {}

    # --- the public calls ---------------------------------------------------------------

    async def resolve(
        self,
        handle: str,
        *,
        types: tuple[str, ...] = (),
        indexes: tuple[int, ...] = (),
        trace: Callable[[Hop], None] | None = None,
        recursion_count: int = 0,
    ) -> WalkResult:
        """Find the service of ``handle`` from the root, ask it, follow referrals."""
        walk = _Walk(trace, base=recursion_count)
        async with self._deadline(handle, walk):
            try:
                sites = await self._service(handle, walk)
            except WalkError as exc:
                exc.prefix_level = True
                raise
            return await self._ask_following(sites, handle, types, indexes, walk)

    async def resolve_at(
        self,
        sites: Sequence[SiteInfo],
        handle: str,
        *,
        types: tuple[str, ...] = (),
        indexes: tuple[int, ...] = (),
        trace: Callable[[Hop], None] | None = None,
        recursion_count: int = 0,
    ) -> WalkResult:
        """Ask ``sites`` for ``handle`` directly, following any referral they give."""
        walk = _Walk(trace, base=recursion_count)
        async with self._deadline(handle, walk):
            return await self._ask_following(tuple(sites), handle, types, indexes, walk)

    async def follow(
        self,
        referral: Message,
        handle: str,
        *,
        asked: SiteInfo | None = None,
        first_hop: Hop | None = None,
        types: tuple[str, ...] = (),
        indexes: tuple[int, ...] = (),
        trace: Callable[[Hop], None] | None = None,
    ) -> WalkResult:
        """Carry on from a 302/303 someone else received (``idnode resolve --server``):
        ``asked`` is the site that gave it (asking it again for ``handle`` is a loop),
        ``first_hop`` the request that got it, traced as the walk's first hop."""
        walk = _Walk(trace)
        if first_hop is not None:
            walk.hop(first_hop)
        if asked is not None:
            walk.asked.add((site_identity(asked), handle.upper()))
        async with self._deadline(handle, walk):
            sites = await self._referred_sites(referral, walk)
            return await self._ask_following(sites, handle, types, indexes, walk)

    async def service_of(self, handle: str) -> tuple[SiteInfo, ...]:
        walk = _Walk(None)
        async with self._deadline(handle, walk):
            return await self._service(handle, walk)

    @contextlib.asynccontextmanager
    async def _deadline(self, handle: str, walk: _Walk) -> AsyncIterator[None]:
        """The whole walk within ``walk_timeout``: past it, a WalkError (unanswered)."""
        try:
            async with asyncio.timeout(self.walk_timeout):
                yield
        except TimeoutError:
            raise WalkError(
                ResponseCode.ERROR,
                f"gave up on {handle} after {self.walk_timeout:g}s",
                walk.hops,
            ) from None

    # --- finding a prefix's service -----------------------------------------------------

    async def _service(self, handle: str, walk: _Walk) -> tuple[SiteInfo, ...]:
        if is_global(handle):
            return self.roots
        na_handle = prefix_handle(handle)
        key = na_handle.upper()
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        if key in walk.pending:
            raise WalkError(
                ResponseCode.RECURSION_COUNT_TOO_HIGH,
                f"service loop: finding the service of {na_handle} needs that service "
                "itself (HS_SERV)",
                walk.hops,
            )
        # Walks that miss the same prefix at once wait for the first one's lookup: the
        # root is asked once, however many handles of a new prefix arrive together.
        pending = self._pending.get(key)
        if pending is not None:
            await asyncio.wait({pending})  # neither raises nor cancels the shared lookup
            if not pending.cancelled():
                exc = pending.exception()
                if exc is not None:
                    raise exc
                return pending.result()
        fut: asyncio.Future[tuple[SiteInfo, ...]] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        walk.pending.add(key)
        try:
            sites, ttl = await self._lookup_service(na_handle, walk)
        except Exception as exc:
            fut.set_exception(exc)
            fut.exception()  # retrieved: nobody waiting is not an error to report
            raise
        else:
            fut.set_result(sites)
            self.cache.put(key, sites, ttl)
            return sites
        finally:
            walk.pending.discard(key)
            if not fut.done():  # cancelled (or anything else): the waiters go on alone
                fut.cancel()
            if self._pending.get(key) is fut:
                del self._pending[key]

    async def _lookup_service(
        self, na_handle: str, walk: _Walk
    ) -> tuple[tuple[SiteInfo, ...], float]:
        """The sites of a prefix handle and how long they may be kept, from the root."""
        prefix = prefix_of(na_handle)
        found = await self._location(na_handle, self.roots, walk)
        sites, ttl = found.sites, found.ttl
        if not sites and found.rc == ResponseCode.HANDLE_NOT_FOUND and "." in prefix:
            sites, ttl = await self._derived(prefix, walk)
        if not sites:
            raise WalkError(
                found.rc if found.rc != ResponseCode.SUCCESS else ResponseCode.HANDLE_NOT_FOUND,
                f"no service found for prefix {prefix}: {na_handle} answered "
                f"{rc_name(found.rc)}" + ("" if found.rc != 1 else " without HS_SITE or HS_SERV"),
                walk.hops,
            )
        return sites, ttl

    async def _derived(self, prefix: str, walk: _Walk) -> tuple[tuple[SiteInfo, ...], float]:
        """``a.b.c`` unknown at the root: ``0.NA/a`` at the root, then each longer prefix
        at the sites (or delegate sites) the one before named."""
        parts = prefix.split(".")
        asking: tuple[SiteInfo, ...] = self.roots
        ttl = float("inf")
        for i in range(1, len(parts) + 1):
            name = NA_PREFIX + ".".join(parts[:i])
            if all((site_identity(s), name.upper()) in walk.asked for s in asking):
                # The parent's sites are those already asked (the root serving the
                # parent too): they said "not found" once, and would again.
                return (), 0.0
            if i > 1:
                # Each level below the root's is asked of other sites: a referral.
                self._count_referral(walk, f"derived prefix {name}")
            found = await self._location(name, asking, walk)
            ttl = min(ttl, found.ttl)
            if i == len(parts):
                return found.sites, ttl
            nxt = found.delegates or found.sites
            if not nxt:
                return (), 0.0
            asking = nxt
        return (), 0.0

    async def _location(
        self, na_handle: str, sites: tuple[SiteInfo, ...], walk: _Walk
    ) -> _Location:
        """The location values of a prefix (or service) handle, asked of ``sites``."""
        result = await self._ask_following(sites, na_handle, LOCATION_TYPES, (), walk)
        m = result.message
        if m.response_code != ResponseCode.SUCCESS or not isinstance(m.body, ResolutionResponse):
            return _Location(m.response_code)
        values = m.body.values
        service = [v for v in values if v.type in SERVICE_TYPES]
        delegate = [v for v in values if v.type in DELEGATE_TYPES]
        sites_found = sites_from_values(service)
        delegates = sites_from_values(delegate, DELEGATE_TYPES)
        used = service + delegate
        if not sites_found and not delegates:
            serv = next((v for v in values if v.type == TYPE_SERV), None)
            if serv is not None:
                # HS_SERV names a service handle; its HS_SITE values are the service.
                # Resolving it counts as a referral, so a chain of them is bounded too.
                self._count_referral(walk, f"HS_SERV of {na_handle}")
                target = serv.data.decode("utf-8", "replace").strip()
                inner = await self._location_anywhere(target, walk)
                return _Location(
                    ResponseCode.SUCCESS,
                    inner.sites,
                    inner.delegates,
                    min(inner.ttl, value_ttl(serv)),
                )
        ttl = min((value_ttl(v) for v in used), default=0.0)
        return _Location(ResponseCode.SUCCESS, sites_found, delegates, ttl)

    async def _location_anywhere(self, handle: str, walk: _Walk) -> _Location:
        """The location values of any handle (a service or referral handle), wherever its
        own service is."""
        if "/" not in handle:
            handle = NA_PREFIX + handle  # a bare prefix names its prefix handle
        sites = await self._service(handle, walk)
        return await self._location(handle, sites, walk)

    # --- asking sites and following referrals --------------------------------------------

    def _count_referral(self, walk: _Walk, what: str) -> None:
        walk.referrals += 1
        if walk.referrals > self.max_referrals:
            raise WalkError(
                ResponseCode.RECURSION_COUNT_TOO_HIGH,
                f"gave up after {self.max_referrals} referrals (the last: {what})",
                walk.hops,
            )

    async def _ask_following(
        self,
        sites: tuple[SiteInfo, ...],
        handle: str,
        types: tuple[str, ...],
        indexes: tuple[int, ...],
        walk: _Walk,
    ) -> WalkResult:
        while True:
            site, server, answer = await self._ask_sites(sites, handle, types, indexes, walk)
            m = answer.message
            if m.response_code not in REFERRALS:
                return WalkResult(m, site, server, tuple(walk.hops))
            sites = await self._referred_sites(m, walk)

    async def _referred_sites(self, m: Message, walk: _Walk) -> tuple[SiteInfo, ...]:
        """Where a 302/303 sends the request: the sites in its body, else those of its
        referral handle. Counts against the referral bound."""
        body = m.body
        target = body.referral_handle if isinstance(body, ReferralResponse) else ""
        self._count_referral(walk, f"{rc_name(m.response_code)} to {target or '?'}")
        values = body.values if isinstance(body, ReferralResponse) and body.values else ()
        sites = sites_from_values(values, SERVICE_TYPES + DELEGATE_TYPES)
        if sites:
            return sites
        if not target:
            raise WalkError(
                ResponseCode.ERROR,
                f"{rc_name(m.response_code)} without sites or a referral handle",
                walk.hops,
            )
        found = await self._location_anywhere(target, walk)
        sites = found.sites or found.delegates
        if not sites:
            raise WalkError(
                ResponseCode.ERROR,
                f"referral to {target}, which names no site ({rc_name(found.rc)})",
                walk.hops,
            )
        return sites

    async def _ask_sites(
        self,
        sites: tuple[SiteInfo, ...],
        handle: str,
        types: tuple[str, ...],
        indexes: tuple[int, ...],
        walk: _Walk,
    ) -> tuple[SiteInfo, ServerInfo, Answer]:
        """The first usable answer of the sites (primary sites first); a site already
        asked for this handle in this walk is a loop and is not asked again."""
        # stable: file order within; a few at most, whatever the record names
        ordered = sorted(sites, key=lambda s: not s.primary)[:MAX_SITES_PER_HOP]
        failures: list[str] = []
        looped: list[str] = []
        fallback: tuple[SiteInfo, ServerInfo, Answer] | None = None
        for site in ordered:
            key = (site_identity(site), handle.upper())
            if key in walk.asked:
                looped.append(site_label(site))
                continue
            walk.asked.add(key)
            server = responsible_server(site, handle)
            try:
                answer = await self._ask_server(site, server, handle, types, indexes, walk)
            except Unanswered as exc:
                failures.append(f"{site_label(site)}: {exc}")
                continue
            if answer.message.response_code in TRY_ANOTHER_SITE:
                fallback = fallback or (site, server, answer)
                continue
            return site, server, answer
        if fallback is not None:
            return fallback
        if looped and not failures:
            raise WalkError(
                ResponseCode.RECURSION_COUNT_TOO_HIGH,
                f"referral loop: {', '.join(looped)} already asked for {handle}",
                walk.hops,
            )
        raise WalkError(
            ResponseCode.ERROR,
            f"no server answered for {handle}: "
            + "; ".join(failures + [f"{x}: loop" for x in looped]),
            walk.hops,
        )

    async def _ask_server(
        self,
        site: SiteInfo,
        server: ServerInfo,
        handle: str,
        types: tuple[str, ...],
        indexes: tuple[int, ...],
        walk: _Walk,
    ) -> Answer:
        version = min(OUR_VERSION, (site.major_version, site.minor_version))
        flags = OpFlag.REC | OpFlag.CA | OpFlag.PO | (OpFlag.CT if self.certify else 0)
        request = replace(
            resolution_request(handle, types=types, indexes=indexes, flags=flags),
            major_version=version[0],
            minor_version=version[1],
            site_info_serial=site.serial,
            recursion_count=min(walk.base + walk.referrals, 255),
        )
        host = server.ip
        label = site_label(site)

        def hop(transport: str, port: int, rc: int | None, note: str) -> None:
            walk.hop(Hop(len(walk.hops) + 1, handle, label, f"{host}:{port}", transport, rc, note))

        def sending(_: str) -> None:
            if walk.requests >= self.max_requests:
                raise WalkError(
                    ResponseCode.RECURSION_COUNT_TOO_HIGH,
                    f"gave up after {self.max_requests} upstream requests",
                    walk.hops,
                )
            walk.requests += 1

        # One server costs at most ``timeout`` in all: a silent one (datagrams dropped,
        # not refused) is left after that, UDP and TCP together.
        answer = await ask_server(
            server, request, self.timeout, prefer_udp=self.udp, sending=sending, tried=hop
        )
        m = answer.message
        note = ""
        if m.response_code in REFERRALS and isinstance(m.body, ReferralResponse):
            note = f"referral to {m.body.referral_handle}"
        if self.certify:
            try:
                check_certified(answer, server, request)
            except Unanswered as exc:
                hop(answer.transport, answer.port, m.response_code, str(exc))
                raise
            note = "signature verified" + (f"; {note}" if note else "")
        hop(answer.transport, answer.port, m.response_code, note)
        return answer


@dataclass(frozen=True, slots=True)
class _Location:
    rc: int
    sites: tuple[SiteInfo, ...] = ()
    delegates: tuple[SiteInfo, ...] = ()
    ttl: float = 0.0


def check_certified(answer: Answer, server: ServerInfo, request: Message) -> None:
    """An answer asked with CT must carry the server's HS_SIGNED credential, valid for the
    public key the server's HS_SITE record gives; anything else is no answer."""
    from idnode.registry.server_key import verify  # the cryptography import, only when asked

    if not server.public_key:
        raise Unanswered(f"server {server.server_id}'s site record has no public key to check")
    if not answer.message.credential:
        raise Unanswered("a certified answer was asked for and the answer is not signed")
    try:
        cred = decode_credential(answer.message.credential)
    except ProtocolError as exc:
        raise Unanswered(f"the answer's credential does not decode: {exc.reason}") from None
    if cred.type not in (HS_SIGNED, HS_DSAPUBKEY):
        raise Unanswered(f"the answer is signed as {cred.type}, not {HS_SIGNED}")
    wire = answer.wire
    version = (wire[0], wire[1])
    suggested = (wire[2] & 0x03, wire[3]) if wire[2] & 0x03 or wire[3] else version
    ours = (request.major_version, request.minor_version)
    data = signed_prefix(
        max(version, ours),
        version,
        suggested,
        int.from_bytes(wire[4:8], "big"),
        int.from_bytes(wire[8:12], "big"),
        0,
    ) + header_and_body(wire)
    if not verify(server.public_key, data, cred.signature):
        raise Unanswered("the answer's signature does not verify with the server's key")
