"""Recursion stage: a client that allows recursion (opFlag REC) gets the answer of the node
that serves the handle instead of a referral, when this node recurses (``--recursion``).

In the chain just before the delegation stage, it answers only when REC is set and:

* the handle is under a prefix delegated here (the delegation stage would refer the
  client with 302/303): it is asked of the delegation's sites, the server the handle
  hashes to (the secondary role); or
* with ``--root-info``, the handle is neither homed nor delegated here (the authority
  stage would answer 301): it is resolved from the root, following referrals (the
  recursive role).

Anything else (REC unset, a handle held here) passes to the next stage unchanged. The
upstream request carries the client's recursionCount + 1 (and the walker adds one per
referral it follows); a request arriving with recursionCount at ``limit`` or over is
answered RC 6 instead of being passed on, so two nodes that refer to each other and
both recurse stop.

Answers are kept in this stage's own bounded per-worker cache, not in L1: L1 serves
clients that did not set REC too, and they must get the referral. Found handles are
kept for their values' TTL (at most ``max_ttl``), "not found" for ``negative_ttl``.
When the server the handle hashes to is marked down by the health probes (every site's,
when there are mirrors), a held answer is served even past its TTL (for up to ``stale``
seconds after it, counted as ``stale``); without one the client gets RC 2 at once,
"enterprise node HOST:PORT for PREFIX is not answering". A held answer is also served
stale when no server answers a lookup.

A lookup that fails (no service for the prefix, no server answered, a loop or a bound
reached: RC 6) is remembered for ``failure_ttl`` seconds, by prefix when it failed
finding the prefix's service, else by handle, in a bounded LRU: asking again within that
time sends nothing upstream, so a client (or a forged source) repeating a failing
request cannot make this node send the same requests to a third party again and again.

A client that sets CT (certified) is not answered here: what the stage has is what it
was told upstream, unverified, and the node would put its own signature on it. Such a
request passes on and gets the delegation's referral, so the client asks the enterprise
node and gets that node's own signed answer.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

from idnode.registry.delegations import Delegations
from idnode.registry.names import PrefixAuthority, is_prefix_handle, prefix_of

from .. import metrics
from ..codec import (
    ErrorResponse,
    OpFlag,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode_values,
    encode_values,
)
from ..codec.codes import rc_name
from ..codec.sitehash import responsible_server
from ..l1 import Entry, Lifetimes
from ..upstream.health import MAX_PER_DELEGATION, ServerHealth, server_label
from ..upstream.sites import sites_from_values
from ..upstream.walker import Walker, WalkError
from .delegation import DelegationStage
from .reloader import touches_prefixes
from .stage import Lookup, Resolution, Stage

_REC = int(OpFlag.REC)
_CT = int(OpFlag.CT)
FAILURE_TTL = 5.0  # a failed lookup is not repeated upstream for this long (s)
NEGATIVE_TTL_MAX = 60.0  # a "not found" is never kept longer: the handle may be created


class AnswerCache:
    """Answers by normalised handle, each kept ``stale`` seconds past its expiry (served
    then only while its server does not answer); a bounded LRU."""

    def __init__(self, max_entries: int = 10_000, stale: float = 3600.0) -> None:
        self.max_entries = max_entries
        self.stale = stale
        self._d: OrderedDict[str, Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str, now: float) -> Entry | None:
        """The entry held for ``key``, fresh or (``expires <= now``) stale; None when none
        or past its stale window."""
        e = self._d.get(key)
        if e is None:
            return None
        if e.expires + self.stale <= now:
            del self._d[key]
            return None
        self._d.move_to_end(key)
        return e

    def put(self, key: str, entry: Entry) -> None:
        if self.max_entries <= 0:
            return
        self._d[key] = entry
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()


class FailureCache:
    """Failed lookups (their Resolution and whether "unanswered"), each for ``ttl``
    seconds; a bounded LRU."""

    def __init__(self, max_entries: int = 10_000, ttl: float = FAILURE_TTL) -> None:
        self.max_entries = max_entries
        self.ttl = ttl
        self._d: OrderedDict[str, tuple[float, Resolution, bool]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str, now: float) -> tuple[Resolution, bool] | None:
        hit = self._d.get(key)
        if hit is None:
            return None
        if hit[0] <= now:
            del self._d[key]
            return None
        return hit[1], hit[2]

    def put(self, key: str, got: Resolution, unanswered: bool, now: float) -> None:
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        self._d[key] = (now + self.ttl, got, unanswered)
        self._d.move_to_end(key)
        while len(self._d) > self.max_entries:
            self._d.popitem(last=False)

    def clear(self) -> None:
        self._d.clear()


@dataclass
class Recursion:
    """How this node recurses: what it asks with, and what it keeps."""

    walker: Walker
    from_root: bool = False  # the recursive role: --root-info given
    health: ServerHealth | None = None
    limit: int = 8  # the highest recursionCount passed on
    cache: AnswerCache | None = None
    max_ttl: float = 3600.0
    negative_ttl: float = 30.0
    failure_ttl: float = FAILURE_TTL
    lifetimes: Lifetimes = field(init=False)  # from max_ttl and negative_ttl (at most 60 s)

    def __post_init__(self) -> None:
        if self.cache is None:
            self.cache = AnswerCache()
        self.lifetimes = Lifetimes(self.max_ttl, min(self.negative_ttl, NEGATIVE_TTL_MAX))


def delegated_servers(
    delegations: Delegations, per_delegation: int = MAX_PER_DELEGATION
) -> list[ServerInfo]:
    """The servers of every delegated prefix's sites, at most ``per_delegation`` of each
    (a record naming a thousand servers gets a few probed, not a thousand): what the
    health probes watch (ServerHealth bounds the total)."""
    out: list[ServerInfo] = []
    for d in sorted(delegations.all(), key=lambda d: (d.prefix, d.referral_handle)):
        mine: list[ServerInfo] = []
        for site in sites_from_values(decode_values(d.sites_wire)):
            mine.extend(site.servers[: per_delegation - len(mine)])
            if len(mine) >= per_delegation:
                break
        out.extend(mine)
    return out


class RecursionStage(Stage):
    # What this stage answers depends on the request's REC flag: L1 (which also serves
    # clients without it) must not keep it. The stage keeps its own.
    answers_learnt = False

    def __init__(
        self,
        recursion: Recursion,
        authority: PrefixAuthority,
        delegation: DelegationStage | None = None,
    ) -> None:
        self.recursion = recursion
        self.authority = authority
        self.delegation = delegation
        self.cache: AnswerCache = recursion.cache or AnswerCache()
        self.failures = FailureCache(self.cache.max_entries, recursion.failure_ttl)
        # Keyed by handle and recursionCount: a request that comes back here through a
        # loop (a higher count) must not wait for the lookup that sent it.
        self._flights: dict[tuple[str, int], asyncio.Future[tuple[Entry | Resolution, bool]]] = {}

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        if not q.flags & _REC or q.flags & _CT:
            # CT: an answer of ours would carry our signature over values nobody here
            # verified; the client gets the referral and asks the signer itself.
            return None
        target = await self._target(q)
        if target is None:
            return None
        sites, prefix = target
        rec = self.recursion
        if q.recursion_count >= rec.limit:
            metrics.UPSTREAM_LOOKUPS.labels("recursion").inc()
            return Resolution(
                ResponseCode.RECURSION_COUNT_TOO_HIGH,
                message=f"recursion count {q.recursion_count} reached this node's bound "
                f"({rec.limit}); not passed on",
            )
        now = time.monotonic()
        held = self.cache.get(q.key, now)
        if held is not None and held.expires > now:
            metrics.RECURSION_CACHE.labels("hit").inc()
            return held
        if sites and rec.health is not None:
            up = tuple(s for s in sites if not rec.health.is_down(responsible_server(s, q.handle)))
            if not up:
                if held is not None:
                    metrics.RECURSION_CACHE.labels("stale").inc()
                    return held
                metrics.RECURSION_CACHE.labels("miss").inc()
                metrics.UPSTREAM_LOOKUPS.labels("down").inc()
                server = server_label(responsible_server(sites[0], q.handle))
                return Resolution(
                    ResponseCode.ERROR,
                    message=f"enterprise node {server} for {prefix} is not answering",
                )
            sites = up
        failed = self.failures.get(_prefix_key(prefix), now) or self.failures.get(q.key, now)
        if failed is not None:
            if failed[1] and held is not None:
                metrics.RECURSION_CACHE.labels("stale").inc()
                return held
            metrics.RECURSION_CACHE.labels("failed").inc()
            return failed[0]
        metrics.RECURSION_CACHE.labels("miss").inc()
        got, unanswered = await self._shared(q, sites, prefix)
        if unanswered and held is not None:
            metrics.RECURSION_CACHE.labels("stale").inc()
            return held
        return got

    async def _target(self, q: Lookup) -> tuple[tuple[SiteInfo, ...], str] | None:
        """Where to recurse for ``q``: the delegation's sites (and its prefix), or ``()``
        for "from the root"; None when this node answers it itself."""
        if self.delegation is not None:
            r = await self.delegation.lookup(q)
            if isinstance(r, Resolution) and r.is_referral:
                sites = sites_from_values(decode_values(r.values_wire))
                named = r.referral
                prefix = prefix_of(named) if is_prefix_handle(named) else named
                if sites:
                    return sites, prefix
                # A service handle this node does not hold: found from the root, if any.
                return ((), prefix) if self.recursion.from_root else None
            if r is not None:
                return None  # answered here (a prefix named without 0.NA/)
        if self.recursion.from_root and not self.authority.serves(q.handle):
            return (), prefix_of(q.handle)
        return None

    async def _shared(
        self, q: Lookup, sites: tuple[SiteInfo, ...], prefix: str
    ) -> tuple[Entry | Resolution, bool]:
        """One upstream lookup per handle at a time: concurrent misses share it."""
        key = (q.key, q.recursion_count)
        flight = self._flights.get(key)
        if flight is not None:
            await asyncio.wait({flight})
            if not flight.cancelled():
                return flight.result()
        fut: asyncio.Future[tuple[Entry | Resolution, bool]]
        fut = asyncio.get_running_loop().create_future()
        self._flights[key] = fut
        try:
            got = await self._ask(q, sites, prefix)
        except BaseException:
            fut.cancel()
            raise
        else:
            fut.set_result(got)
            return got
        finally:
            if self._flights.get(key) is fut:
                del self._flights[key]

    async def _ask(
        self, q: Lookup, sites: tuple[SiteInfo, ...], prefix: str
    ) -> tuple[Entry | Resolution, bool]:
        """The answer upstream, and whether it is "no server answered"."""
        rec = self.recursion
        count = q.recursion_count + 1
        try:
            if sites:
                result = await rec.walker.resolve_at(sites, q.handle, recursion_count=count)
            else:
                result = await rec.walker.resolve(q.handle, recursion_count=count)
        except WalkError as exc:
            got = Resolution(exc.rc, message=str(exc))
            unanswered = exc.rc == ResponseCode.ERROR
            if exc.rc == ResponseCode.RECURSION_COUNT_TOO_HIGH:
                metrics.UPSTREAM_LOOKUPS.labels("recursion").inc()
                unanswered = False
            else:
                metrics.UPSTREAM_LOOKUPS.labels("unanswered" if unanswered else "refused").inc()
            # Not asked again for a while: by prefix when the prefix's service was not
            # found (every handle of it would fail the same), else by handle.
            key = _prefix_key(prefix) if exc.prefix_level else q.key
            self.failures.put(key, got, unanswered, time.monotonic())
            return got, unanswered
        m = result.message
        now = time.monotonic()
        if m.response_code == ResponseCode.SUCCESS and isinstance(m.body, ResolutionResponse):
            metrics.UPSTREAM_LOOKUPS.labels("answered").inc()
            entry = rec.lifetimes.entry(encode_values(m.body.values), now)
            self.cache.put(q.key, entry)
            return entry, False
        if m.response_code == ResponseCode.HANDLE_NOT_FOUND:
            metrics.UPSTREAM_LOOKUPS.labels("not_found").inc()
            entry = rec.lifetimes.entry(None, now)
            self.cache.put(q.key, entry)
            return entry, False
        outcome = (
            "recursion" if m.response_code == ResponseCode.RECURSION_COUNT_TOO_HIGH else "refused"
        )
        metrics.UPSTREAM_LOOKUPS.labels(outcome).inc()
        said = m.body.message if isinstance(m.body, ErrorResponse) else ""
        return Resolution(m.response_code, message=said or rc_name(m.response_code)), False

    def forget(self, keys: Sequence[str]) -> None:
        # A prefix record written here may add, move or drop a delegation: what was
        # fetched through the old one is no longer certain.
        if touches_prefixes(keys):
            self.cache.clear()
            self.failures.clear()

    def forget_all(self) -> None:
        self.cache.clear()
        self.failures.clear()


def _prefix_key(prefix: str) -> str:
    return "prefix:" + prefix.upper()
