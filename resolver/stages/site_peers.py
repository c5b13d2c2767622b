"""Site peers stage: on one server of a multi-server site, a handle that hashes to another
server of the site (registry/site_servers.py) is asked of that server, and its answer is
this lookup's answer.

Placed after the authority stage (the prefix is homed by every server of the site) and
before Redis and the registry (this server's registry does not hold the handle, and a
shared Redis must not be filled with another server's handles). L1, in front, keeps the
peer's answers, but for at most ``--site-peer-ttl`` (5 s): a write on the peer reaches
this server's L1 through no channel unless the servers share a Redis namespace (then its
invalidation is heard like any other node's), so the short cap bounds how long a stale
copy is served. A handle that does not exist is kept as briefly (and never longer than
``--negative-ttl``).

The peer is asked with AT and PO set and no recursion: the public values, from its
registry. UDP first (half the budget when TCP is there to fall back on), TCP when UDP
fails, is truncated or says "ask over TCP" (upstream/exchange.py's ask_server, as the
walker asks); at most ``--site-peer-timeout`` in all. A
peer that does not answer gives RC 2 naming it, and is answered so at once for a second
afterwards (``PEER_RETRY``) instead of being waited for again. Lookups of one handle
under way together share one request: a loop between servers configured with different
site lists ends at the first timeout instead of multiplying requests.

Values without PUBLIC_READ of a peer's handle are not served here (the peer gives only
public values to this server); a client that needs them asks the responsible server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import replace

from idnode.registry.site_servers import SiteServers, describe

from ..client import resolution_request
from ..codec import (
    ErrorResponse,
    Message,
    OpFlag,
    ProtocolError,
    ReferralResponse,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode_values,
    encode_values,
)
from ..codec.bodies import SiteInfoResponse
from ..l1 import Entry, Lifetimes
from ..upstream.exchange import Unanswered, ask_server, site_info_request
from ..upstream.sites import sites_from_values
from .stage import Lookup, Resolution, Stage

log = logging.getLogger("idnode.site")

PEER_RETRY = 1.0  # seconds a peer that did not answer is answered for at once
FLAGS = OpFlag.AT | OpFlag.PO


class SitePeersStage(Stage):
    def __init__(
        self,
        site: SiteServers,
        lifetimes: Lifetimes,
        *,
        timeout: float = 1.0,
        ttl: float = 5.0,
    ) -> None:
        self.site = site
        self.timeout = timeout
        # What L1 may keep of a peer's answer: its values' TTL, capped by --l1-ttl and
        # --site-peer-ttl; "not found" by --negative-ttl and --site-peer-ttl.
        self.lifetimes = Lifetimes(
            min(lifetimes.ttl, max(0.0, ttl)), min(lifetimes.negative_ttl, max(0.0, ttl))
        )
        self._asking: dict[str, asyncio.Future[Entry | Resolution]] = {}
        self._down: dict[int, tuple[float, str]] = {}  # server id -> (until, why)

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        server = self.site.holder(q.handle)
        if server is None:
            return None  # this server holds it: the next stages read it
        pending = self._asking.get(q.key)
        if pending is None:
            pending = asyncio.ensure_future(self._ask(server, q.handle))
            self._asking[q.key] = pending
            pending.add_done_callback(lambda _: self._asking.pop(q.key, None))
        # shielded: one cancelled lookup must not cancel the others' request
        return await asyncio.shield(pending)

    async def _ask(self, server: ServerInfo, handle: str) -> Entry | Resolution:
        now = time.monotonic()
        down = self._down.get(server.server_id)
        if down is not None and down[0] > now:
            return self._unanswered(server, handle, down[1])
        try:
            m = await self._exchange(server, handle)
        except Unanswered as exc:
            self._down[server.server_id] = (time.monotonic() + PEER_RETRY, str(exc))
            log.warning("%s of this site does not answer: %s", describe(server), exc)
            return self._unanswered(server, handle, str(exc))
        self._down.pop(server.server_id, None)
        rc = m.response_code
        if rc == ResponseCode.SUCCESS and isinstance(m.body, ResolutionResponse):
            return self.lifetimes.entry(encode_values(m.body.values), time.monotonic())
        if rc == ResponseCode.HANDLE_NOT_FOUND:
            return self.lifetimes.entry(None, time.monotonic())
        if isinstance(m.body, ReferralResponse):
            b = m.body
            return Resolution(
                rc,
                encode_values(b.values or ()),
                f"{describe(server)} of this site refers to {b.referral_handle}",
                b.referral_handle,
            )
        said = m.body.message if isinstance(m.body, ErrorResponse) else ""
        return Resolution(
            rc, message=f"{describe(server)} of this site, which holds {handle}: {said}".rstrip()
        )

    @staticmethod
    def _unanswered(server: ServerInfo, handle: str, why: str) -> Resolution:
        return Resolution(
            ResponseCode.ERROR,
            message=f"{describe(server)} of this site, which holds {handle}, "
            f"does not answer: {why}",
        )

    async def _exchange(self, server: ServerInfo, handle: str) -> Message:
        request = resolution_request(handle, flags=FLAGS)
        return (await ask_server(server, request, self.timeout)).message

    async def drain(self) -> None:
        for pending in list(self._asking.values()):
            pending.cancel()
            with contextlib.suppress(BaseException):
                await pending


# --- the other servers' public keys, for the published HS_SITE ------------------------


async def fetch_keys(site: SiteInfo, own_id: int, timeout: float) -> dict[int, bytes]:
    """The public keys of the other servers of ``site`` that answer GET_SITE_INFO over TCP
    within ``timeout`` (each one's own record of itself), by server id."""

    async def one(server: ServerInfo) -> tuple[int, bytes]:
        try:
            answer = await ask_server(server, site_info_request(), timeout, prefer_udp=False)
        except Unanswered:
            return server.server_id, b""
        body = answer.message.body
        if not isinstance(body, SiteInfoResponse):
            return server.server_id, b""
        same = [x for x in body.site.servers if x.server_id == server.server_id]
        return server.server_id, same[0].public_key if same else b""

    others = [x for x in site.servers if x.server_id != own_id]
    found = await asyncio.gather(*(one(x) for x in others))
    return {sid: key for sid, key in found if key}


def stored_keys(values_wire: bytes | None, site: SiteInfo) -> dict[int, bytes]:
    """Keys already published (in ``0.NA/<prefix>``'s HS_SITE) for servers of ``site`` still
    at the same address and ports: a restarted server publishes them again at once
    instead of dropping them until the others answer."""
    if not values_wire:
        return {}
    try:
        values = decode_values(values_wire)
    except ProtocolError:
        return {}
    wanted = {(x.server_id, x.address, x.interfaces) for x in site.servers}
    keys: dict[int, bytes] = {}
    for old in sites_from_values(values):
        for x in old.servers:
            if x.public_key and (x.server_id, x.address, x.interfaces) in wanted:
                keys[x.server_id] = x.public_key
    return keys


def with_keys(site: SiteInfo, keys: dict[int, bytes]) -> SiteInfo:
    """``site`` with the servers' public keys from ``keys`` where it has none."""
    servers = tuple(
        replace(x, public_key=keys[x.server_id])
        if not x.public_key and keys.get(x.server_id)
        else x
        for x in site.servers
    )
    return replace(site, servers=servers)
