"""Failed authentications, throttled and audited, on every door.

Guessing a password or a secret key costs an attacker nothing but a packet unless the
node makes it cost time. Every check of a presented secret (a challenge answer, a
VERIFY_RESPONSE, an IDIS login, REST Basic, a REST session answer, an IDIS token login,
an API key) asks ``admit`` first and reports the outcome:

* Each client address, and each identity (``index:handle``) a secret is presented for,
  has a bucket of ``failures`` (per identity ``identity_failures``) tries that refills
  one every ``interval`` seconds. ``admit`` takes one from each bucket before the check
  (so a burst of parallel guesses cannot all pass before their failures are counted);
  ``passed`` gives it back. An empty bucket is refused with ``Throttled`` and its
  retry-after, which each door answers with its own "too many attempts" code. A client
  that mistypes a few times is never refused; a guesser gets one try per ``interval``.
  The identity bucket is larger than the client's, so one guessing address is refused
  long before the identity's owner is; guessing from many addresses at once does
  throttle the identity for everyone (the price of bounding it at all).
* The buckets live in LRUs of ``max_keys`` entries: memory is bounded whatever the
  number of addresses or names sprayed (the least recently seen, the full buckets of
  clients long gone, are forgotten first).
* With Redis (``shared``), failures are also counted there, for every worker and node
  (``SharedFailures`` in shared_limits.py: one Lua script on one key, Redis-Cluster
  safe): each failure is counted before its answer is sent (``failed`` awaits it), and
  ``admit`` (synchronous) also refuses a key whose shared count this worker last read
  as empty. A worker reads a key's shared count when a failure of it is counted here
  (``fail`` answers it), and re-reads it, off the request path, on the first attempt
  after that reading is ``VIEW_SECONDS`` old; it counts the refill on top of a reading
  for at most ``VIEW_SECONDS``. A key that never failed here is not read (so a flood of
  spoofed addresses costs Redis nothing; reads off the request path also stop while
  the shared limits' gate is full). So a guesser moving to another worker or node gets
  the attempts that worker admits before its first failure there is counted (one for a
  guesser that waits for each answer; at most the local bucket for a parallel burst),
  and these are a debt (the shared count goes down to minus the bucket) paid back
  before it is admitted again; a failure elsewhere is seen within ``VIEW_SECONDS`` plus
  one Redis round trip by a worker that has read the key. Successes cost nothing in
  Redis. The local bucket still bounds what one worker admits at once. When Redis does
  not answer, each worker throttles on its own (at most N times these rates on N
  workers): logged once, counted in ``idnode_shared_limit_fallbacks_total{limit}``;
  failures meanwhile are not counted in Redis.
* Failed authentications are audited without letting the audit log fill the disk: the
  first failure of an identity in an ``audit_interval`` writes a row at once, the rest
  (and the attempts the throttle refused unchecked) are counted and written as one
  summary row when the interval ends; at most ``audit_rows`` identities get rows of
  their own per interval, the others share one summary row. So a worker writes at most
  2 × ``audit_rows`` + 1 rows an interval. Counts still pending when a worker stops are
  lost (at most one interval's summary).
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from idnode.resolver.codec import ResponseCode

from .audit_trail import AuditTrail
from .auth import AuthError, Identity
from .shared_limits import Shared, SharedFailures

log = logging.getLogger("idnode.auth")

NAME_KEPT = 128  # longer names are keyed (and audited) by a digest: an attacker names them

# How old this worker's reading of a shared failure count may be before an attempt for
# that key has it read again: the delay within which a failure counted by another worker
# or node is seen here (plus one Redis round trip).
VIEW_SECONDS = 1.0


class Throttled(AuthError):
    """Too many failed authentications from this client or for this identity."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def client_key(client: str) -> str:
    """The address a client is throttled as: an IPv6 client by its /64 (one host
    holds a whole /64), anything else as given."""
    try:
        addr = ipaddress.ip_address(client)
    except ValueError:
        return client[:NAME_KEPT]
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.ip_network(f"{addr}/64", strict=False))
    return str(addr)


def identity_key(who: Identity) -> str:
    handle = who.handle.upper()
    if len(handle) > NAME_KEPT:
        handle = "sha256:" + hashlib.sha256(handle.encode("utf-8", "replace")).hexdigest()
    return f"{who.index}:{handle}"


class Buckets:
    """Token buckets in an LRU of at most ``max_keys``: ``capacity`` tries, one more
    every ``interval`` seconds."""

    def __init__(self, capacity: int, interval: float, max_keys: int) -> None:
        self.capacity = float(capacity)
        self.interval = interval
        self.max_keys = max_keys
        self._b: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._b)

    def take(self, key: str, now: float) -> float:
        """Take one try: 0.0, or the seconds until one is back (nothing taken)."""
        tokens, last = self._b.pop(key, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - last) / self.interval)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) * self.interval
        self._b[key] = (tokens, now)
        while len(self._b) > self.max_keys:
            self._b.popitem(last=False)
        return wait

    def give(self, key: str) -> None:
        """Give back a try taken for an attempt that succeeded."""
        kept = self._b.get(key)
        if kept is not None:
            self._b[key] = (min(self.capacity, kept[0] + 1.0), kept[1])


@dataclass(slots=True)
class _Reading:
    """The tries a key had left in Redis when last read (None: not read yet)."""

    left: float | None = None
    at: float = 0.0  # time.monotonic() of the reading
    asking: bool = False


class SharedCounts:
    """This worker's readings of one kind of shared failure count, in an LRU of
    ``max_keys``; a reading is renewed off the request path when it is old."""

    def __init__(self, failures: SharedFailures, max_keys: int) -> None:
        self.failures = failures
        self.max_keys = max_keys
        self._r: OrderedDict[str, _Reading] = OrderedDict()

    @property
    def up(self) -> bool:
        return self.failures.shared.up()

    def wait(self, key: str, now: float) -> float:
        """0.0, or the seconds until ``key`` has a try left as this worker last read it
        (asking again when that reading is old)."""
        r = self._r.pop(key, None) or _Reading()
        self._r[key] = r
        while len(self._r) > self.max_keys:
            self._r.popitem(last=False)
        age = now - r.at
        if r.left is None:
            # Never read: the local bucket alone. Not asked either: a key that has not
            # failed here costs Redis nothing (a flood of spoofed addresses would cost a
            # call each); its first failure here reads the shared count (``fail``).
            return 0.0
        if age > VIEW_SECONDS and not r.asking:
            self._ask(key, r)
        # The refill is counted on top of a reading for VIEW_SECONDS at most: a try that
        # came back since may have been taken by another worker.
        left = min(self.failures.burst, r.left + min(age, VIEW_SECONDS) * self.failures.rate)
        if left >= 1.0:
            return 0.0
        wait = (1.0 - left) / self.failures.rate
        # an old reading may be too low: it is being read again, so try again shortly
        return min(wait, VIEW_SECONDS) if age > VIEW_SECONDS else wait

    def _ask(self, key: str, r: _Reading) -> None:
        # Not asked (the shared limits' gate is full, or no loop): the old reading stays,
        # asked again on a later attempt.
        r.asking = self.failures.shared.gate.ask(lambda: self._read(key, r))

    async def _read(self, key: str, r: _Reading) -> None:
        try:
            left = await self.failures.left(key)
        finally:
            r.asking = False
        if left is not None:
            r.left, r.at = left, time.monotonic()

    async def fail(self, key: str) -> None:
        """Count a failure of ``key`` in Redis (skipped while Redis is down)."""
        if not self.up:
            return
        left = await self.failures.fail(key)
        if left is not None:
            r = self._r.pop(key, None) or _Reading()
            self._r[key] = r
            r.left, r.at = left, time.monotonic()
            while len(self._r) > self.max_keys:
                self._r.popitem(last=False)


@dataclass(slots=True)
class _Tally:
    """Failures of one identity in the current audit interval, not yet written."""

    who: str
    target: str
    door: str
    reason: str
    count: int = 0
    refused: int = 0  # attempts the throttle refused unchecked
    clients: set[str] = field(default_factory=set)


class LoginGuard:
    def __init__(
        self,
        audit: AuditTrail | None = None,
        *,
        failures: int = 10,
        identity_failures: int = 100,
        interval: float = 6.0,
        max_keys: int = 20_000,
        audit_interval: float = 60.0,
        audit_rows: int = 20,
        shared: Shared | None = None,
    ) -> None:
        self.audit = audit
        self.enabled = failures > 0
        self.clients = Buckets(max(failures, 1), interval, max_keys)
        self.identities = Buckets(max(identity_failures, 1), interval, max_keys)
        # with Redis: the same counts for every worker and node (see the module's doc)
        self.shared_clients: SharedCounts | None = None
        self.shared_identities: SharedCounts | None = None
        if shared is not None:
            rate = 1.0 / interval
            self.shared_clients = SharedCounts(
                SharedFailures(shared, "authc", rate, self.clients.capacity), max_keys
            )
            self.shared_identities = SharedCounts(
                SharedFailures(shared, "authi", rate, self.identities.capacity), max_keys
            )
        self.audit_interval = audit_interval
        self.audit_rows = audit_rows
        self.refused = 0  # attempts refused without being checked
        self.failed_total = 0
        self._window: dict[str, _Tally] = {}
        self._others = _Tally("*", "", "", "")  # identities past audit_rows
        self._flusher: asyncio.Task[None] | None = None

    # --- the throttle ----------------------------------------------------------------

    def admit(self, client: str, who: Identity | None = None) -> None:
        """Take a try for ``client`` and ``who``; Throttled when either has none left."""
        if not self.enabled:
            return
        now = time.monotonic()
        ckey = client_key(client) if client else ""
        wait = self._take(self.clients, self.shared_clients, ckey, now) if ckey else 0.0
        if wait:
            self._note_refused(client, who if who is not None else f"client {ckey}")
            raise Throttled(
                f"too many failed authentications from {ckey}; try again in {wait:.0f} s"
                if wait >= 1
                else f"too many failed authentications from {ckey}; try again shortly",
                wait,
            )
        if who is not None:
            wait = self._take(self.identities, self.shared_identities, identity_key(who), now)
            if wait:
                if ckey:
                    self.clients.give(ckey)  # this client's try was not used
                self._note_refused(client, who)
                raise Throttled(
                    f"too many failed authentications for {who}; try again in {wait:.0f} s"
                    if wait >= 1
                    else f"too many failed authentications for {who}; try again shortly",
                    wait,
                )

    @staticmethod
    def _take(local: Buckets, shared: SharedCounts | None, key: str, now: float) -> float:
        """A try of ``key`` from this worker's bucket and, with Redis, as the shared count
        was last read: 0.0, or the seconds until one is back (nothing taken)."""
        wait = local.take(key, now)
        if wait or shared is None or not shared.up:
            return wait
        wait = shared.wait(key, now)
        if wait:
            local.give(key)
        return wait

    def passed(self, client: str, who: Identity | None = None) -> None:
        """The attempt admitted for ``client`` and ``who`` proved its secret."""
        if not self.enabled:
            return
        if client:
            self.clients.give(client_key(client))
        if who is not None:
            self.identities.give(identity_key(who))

    # --- the audit -------------------------------------------------------------------

    @staticmethod
    def _names(who: Identity | str) -> tuple[str, str]:
        """(the key a tally is kept under, the actor its rows name)."""
        if isinstance(who, Identity):
            name = identity_key(who)
            return name, str(who) if len(who.handle) <= NAME_KEPT else name
        return str(who)[:NAME_KEPT], str(who)[:NAME_KEPT]

    def _note_refused(self, client: str, who: Identity | str) -> None:
        """Count an attempt refused unchecked, for the interval's summary row (no row of
        its own: refusals come as fast as an attacker sends them)."""
        self.refused += 1
        name, actor = self._names(who)
        tally = self._window.get(name)
        if tally is None:
            if len(self._window) >= self.audit_rows:
                tally = self._others
            else:
                tally = self._window[name] = _Tally(actor, "", "", "")
        tally.refused += 1
        if len(tally.clients) < 16:
            tally.clients.add(client)
        self._schedule()

    async def failed(
        self, client: str, who: Identity | str, door: str, reason: str, target: str = ""
    ) -> None:
        """Count a failed authentication (in Redis too, before the answer is sent) and
        audit it: a row for the first of an identity in an interval, a summary row for
        the rest when it ends."""
        self.failed_total += 1
        if self.enabled:
            if client and self.shared_clients is not None:
                await self.shared_clients.fail(client_key(client))
            if isinstance(who, Identity) and self.shared_identities is not None:
                await self.shared_identities.fail(identity_key(who))
        name, actor = self._names(who)
        target = target[:NAME_KEPT]
        tally = self._window.get(name)
        if tally is None and len(self._window) >= self.audit_rows:
            tally = self._others
        if tally is None or (tally is not self._others and not tally.door):
            # the first failure checked in this interval (refusals may have come first)
            if tally is None:
                tally = self._window[name] = _Tally(actor, target, door, reason)
            tally.target, tally.door, tally.reason = target, door, reason
            self._schedule()
            detail = f"{door}: {reason} (from {client or 'unknown'})"
            await self._write(actor, target, detail)
            return
        tally.count += 1
        if len(tally.clients) < 16:
            tally.clients.add(client)
        self._schedule()

    def _schedule(self) -> None:
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    async def _flush_later(self) -> None:
        while self._window or self._others.count or self._others.refused:
            await asyncio.sleep(self.audit_interval)
            await self.flush()

    async def flush(self) -> None:
        """Write the summary rows of the interval that ended and start a new one."""
        window, others = self._window, self._others
        self._window, self._others = {}, _Tally("*", "", "", "")
        for t in [*window.values(), others]:
            if t.count or t.refused:
                many = "+" if len(t.clients) >= 16 else ""
                what = f"{t.count} more failed authentications" if t.count else ""
                if t.refused:
                    what += f"{' and ' if what else ''}{t.refused} attempts refused unchecked"
                detail = (
                    f"{what} in {self.audit_interval:.0f} s from {len(t.clients)}{many}"
                    " addresses"
                    + (
                        f" ({t.door}: {t.reason})"
                        if t.door
                        else (" for other identities" if t is others else " (throttled)")
                    )
                )
                await self._write(t.who, t.target, detail)

    async def _write(self, who: str, target: str, detail: str) -> None:
        if self.audit is None:
            return
        try:
            await self.audit.record(
                who, "AUTHENTICATE", target, ResponseCode.AUTHENTICATION_FAILED, detail
            )
        except Exception as exc:  # an audit that cannot be written must not fail the answer
            log.warning("cannot audit a failed authentication: %s", exc)
