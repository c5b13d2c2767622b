"""Secrets proven a moment ago, and the checks of a secret still in flight.

A client sending many requests at once with one credential (32 concurrent PUTs with one
API key) would otherwise have each checked on its own: each check takes a try from the
login guard before its lookup (login_guard.py) and gives it back after, so with more
checks in flight than the guard's tries the next is refused (429) although none failed;
and each pays a lookup. So:

* Concurrent checks of the same presented secret from the same client share one check:
  one try taken, one lookup, one pass or failure counted; the others await its answer
  (and its Throttled). A check is keyed by a digest of what was presented, so a guesser
  sending different guesses still pays a try for each. It is keyed by the client too:
  one client's checks are never refused for another client's throttling, and each
  client's failures are counted for it.
* A secret proven in the last ``seconds`` by a client is accepted from that client with
  neither a try nor a lookup. Proofs are kept per client: a throttled guesser must not
  learn that a guess is right because another client (the account's own service, say)
  proved it a moment ago. Only successes are kept: each failed guess is still checked
  and counted. The entries are kept in the
  order proven, at most ``max_entries``: memory is bounded whatever is sprayed.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

# How long a proven secret is trusted without a lookup. A revoked API key, or a changed
# or removed HS_SECKEY, must stop working within 10 s on every worker (the doors' own
# caches trust a check for 8 s, counted from when they store it, which may be up to 2 s
# after the proof: 10 s in all; tests/e2e/test_first_run.py::
# test_a_revoked_api_key_stops_working_within_ten_seconds), while still sparing the
# lookups of a client's burst of requests.
PROVEN_SECONDS = 2.0
MAX_PROVEN = 10_000  # entries kept at most (each well under 1 KiB)

T = TypeVar("T")


class ProvenSecrets(Generic[T]):
    """What each recently proven secret proved (keyed by its digest), and the checks
    in flight (keyed by digest and client)."""

    def __init__(self, seconds: float = PROVEN_SECONDS, max_entries: int = MAX_PROVEN) -> None:
        self.seconds = seconds
        self.max_entries = max_entries
        self._proven: OrderedDict[tuple[str, str | None], tuple[float, T]] = OrderedDict()
        self._flights: dict[tuple[str, str | None], asyncio.Future[T | None]] = {}
        # bumped by forget: a check begun before a forget does not keep its success (the
        # secret may have been revoked after its lookup answered)
        self._forgets = 0

    def __len__(self) -> int:
        return len(self._proven)

    def proven(self, digest: str, client: str | None = None) -> T | None:
        """What ``digest``'s secret proved for ``client``, if it did in the last ``seconds``."""
        key = (digest, client)
        hit = self._proven.get(key)
        if hit is None:
            return None
        if time.monotonic() - hit[0] < self.seconds:
            return hit[1]
        del self._proven[key]
        return None

    def forget(self, digest: str) -> None:
        """Check ``digest``'s secret again next time, for every client (it was just
        revoked here; a rare event, so a scan of the bounded table)."""
        for key in [k for k in self._proven if k[0] == digest]:
            del self._proven[key]
        self._forgets += 1

    async def check(
        self, digest: str, client: str | None, check: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        """What the secret ``digest`` names proves (None: nothing), from a proof of the
        last ``seconds``, else from the check of it ``client`` has in flight, else from
        ``check()`` (whose exceptions, Throttled among them, every waiter gets)."""
        while True:
            hit = self.proven(digest, client)
            if hit is not None:
                return hit
            key = (digest, client)
            flight = self._flights.get(key)
            if flight is None:
                return await self._lead(key, check)
            # asyncio.wait: a waiter cancelled (its client gone) leaves the check running
            await asyncio.wait((flight,))
            if not flight.cancelled():
                return flight.result()
            # the check's own request was cancelled before it had an answer: check anew

    async def _lead(
        self, key: tuple[str, str | None], check: Callable[[], Awaitable[T | None]]
    ) -> T | None:
        # A proof counts from before its lookup: it stops being trusted ``seconds`` after
        # a moment the secret was still good.
        started, forgets = time.monotonic(), self._forgets
        flight: asyncio.Future[T | None] = asyncio.get_running_loop().create_future()
        self._flights[key] = flight
        try:
            result = await check()
        except Exception as exc:
            flight.set_exception(exc)
            flight.exception()  # retrieved: there may be no waiter to read it
            raise
        except BaseException:
            flight.cancel()
            raise
        finally:
            del self._flights[key]
        if result is not None and forgets == self._forgets:
            self._keep(key, started, result)
        flight.set_result(result)
        return result

    def _keep(self, key: tuple[str, str | None], at: float, value: T) -> None:
        self._proven.pop(key, None)
        self._proven[key] = (at, value)
        # the oldest proofs first: the expired ones go, then any past the bound
        now = time.monotonic()
        while self._proven:
            first = next(iter(self._proven.values()))
            if len(self._proven) <= self.max_entries and now - first[0] < self.seconds:
                break
            self._proven.popitem(last=False)
