"""What the registry tells a front door about a request: typed results, not wire bodies.

Each door renders these in its own protocol (a Handle message body, a REST JSON reply,
a gRPC status, an IDIS envelope); the registry knows none of them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from idnode.errors import RequestRefused
from idnode.resolver.codec.codes import ResponseCode


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What a write did.

    ``code`` is the Handle response code; ``message`` says why when it was refused;
    ``changed`` is true when the registry now holds something else (its caches were told);
    ``handle`` is the handle written (for a mint, the handle minted); ``replaced`` is
    true when a create replaced a handle that existed.
    """

    code: int
    message: str = ""
    changed: bool = False
    handle: str = ""
    replaced: bool = False

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS

    @classmethod
    def refused(cls, exc: RequestRefused, handle: str = "") -> WriteResult:
        return cls(exc.rc, exc.message, handle=handle)


@dataclass(frozen=True, slots=True)
class Listing:
    """A list the registry answered with (handles under a prefix, homed prefixes)."""

    code: int
    message: str = ""
    handles: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.code == ResponseCode.SUCCESS

    @classmethod
    def refused(cls, exc: RequestRefused) -> Listing:
        return cls(exc.rc, exc.message)


class BatchItem(NamedTuple):
    """One record's result in a batch, in the order the records came."""

    handle: str
    code: int
    message: str
