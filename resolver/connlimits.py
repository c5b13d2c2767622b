"""Bounds a worker keeps on its TCP and HTTP ports: connections per client address and in
all, bytes held for requests not yet answered, the descriptor limit, and one summarised
log line when a bound refuses someone.

A hostile client must not be able to hold the worker's memory or descriptors; a bound
that bites is logged, but at most once per kind every LOG_EVERY seconds (an attack
would otherwise flood the log with one line per refused connection).
"""

from __future__ import annotations

import ctypes
import logging
import resource
from collections import Counter
from collections.abc import Callable
from typing import cast

from .logs import Repeats

log = logging.getLogger("idnode.limits")

LOG_EVERY = 10.0  # seconds between two summaries of the same bound
FD_RESERVE = 128  # descriptors kept for the registry, Redis, logs and files


class LimitLog:
    """Refusals by a limit, logged through logs.Repeats: the first of each kind at once,
    then at most one line per LOG_EVERY s with how many came meanwhile."""

    def __init__(self, every: float = LOG_EVERY) -> None:
        self._repeats = Repeats(log, every)

    def bite(self, kind: str, client: str) -> None:
        # The kind is part of the format string, so each kind is counted on its own.
        self._repeats.warning(
            f"limit reached: {kind.replace('%', '%%')} (e.g. client %s)", client or "?"
        )


class ConnectionLimits:
    """Open connections per client address and in all, shared by the TCP and HTTP doors of
    one worker."""

    def __init__(self, per_client: int, total: int, report: LimitLog | None = None) -> None:
        self.per_client = per_client
        self.total = total
        self.report = report or LimitLog()
        self.open: Counter[str] = Counter()
        self.count = 0

    def admit(self, client: str, door: str) -> bool:
        """Whether a new connection from ``client`` may stay open; if so it is counted
        until release()."""
        if self.count >= self.total:
            self.report.bite(f"{door}: {self.total} connections open in this worker", client)
            return False
        if self.per_client > 0 and self.open[client] >= self.per_client:
            self.report.bite(
                f"{door}: {self.per_client} connections from one client address", client
            )
            return False
        self.open[client] += 1
        self.count += 1
        return True

    def release(self, client: str) -> None:
        self.count -= 1
        self.open[client] -= 1
        if self.open[client] <= 0:
            del self.open[client]


SMALL = 64 * 1024  # a request this size or less is the usual traffic


class ByteBudget:
    """Bytes a worker holds for requests still arriving, over all its connections.

    Large requests may fill it up to ``limit``; small ones (SMALL bytes or less, nearly
    every well-behaved request) up to twice that, so large ones held by a slow client
    cannot lock out the small requests of everyone else.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._peak = 0  # most held since the budget last emptied

    def take(self, n: int, size: int | None = None) -> bool:
        """Count ``n`` more bytes for a request of ``size`` bytes (default ``n``);
        False, counting nothing, if they do not fit."""
        ceiling = self.limit * 2 if (n if size is None else size) <= SMALL else self.limit
        if self.used + n > ceiling:
            return False
        self.used += n
        self._peak = max(self._peak, self.used)
        return True

    def give(self, n: int) -> None:
        self.used = max(0, self.used - n)
        if self.used == 0 and self._peak >= TRIM_AFTER:
            self._peak = 0
            release_freed_memory()


TRIM_AFTER = 16 * 1024 * 1024  # bytes held at once before an emptied budget trims the heap


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return cast("Callable[[int], int]", ctypes.CDLL(None).malloc_trim)
    except (OSError, AttributeError):  # not glibc
        return None


_trim = _malloc_trim()


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the system. Request bodies arrive as many
    chunks of tens of KiB, freed into glibc's heap where they stay resident: measured,
    a worker that held 64 MiB of tunnel bodies kept ~95 MiB more RSS for minutes after
    the connections closed. Called only when a budget that held a lot empties."""
    if _trim is not None:
        _trim(0)


def raise_descriptor_limit() -> int:
    """Raise the soft limit on open descriptors to the hard one (a default soft limit of
    1,024 lets a thousand idle sockets lock every client out); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # No hard limit: the kernel still caps a process (fs.nr_open, 1,048,576 by default).
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the descriptor limit from %d to %d: %s", soft, target, exc)
            return soft
        log.info("descriptor limit raised from %d to %d", soft, target)
        return target
    return soft


def connection_ceiling(descriptors: int) -> int:
    """Connections a worker accepts in all: what its descriptor limit leaves after a
    reserve, so the registry, Redis and /healthz always find a descriptor."""
    return max(16, descriptors - FD_RESERVE)
