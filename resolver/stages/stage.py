"""The one interface of the resolver's lookup chain: what a stage is and may answer.

A lookup walks the stages in order (the order is one list, in resolver/node.py). Each
stage has one job and answers one of three ways from :meth:`Stage.lookup`:

* an :class:`~idnode.resolver.l1.Entry` (the handle's values, or "does not exist"): the
  lookup ends, and every stage it passed on the way down is told by :meth:`Stage.learn`
  so a cache keeps it (unless the handle was invalidated meanwhile: the core checks);
* a :class:`Resolution` (a final answer that is not data, such as "not homed here" or
  "the registry is down"): the lookup ends and nothing learns it;
* ``None``: not mine to answer, ask the next stage.

Writes reach the stages through :meth:`Stage.forget` (this worker drops the keys) and
:meth:`Stage.invalidate` (tell whatever is shared, before the write reports success);
after Redis or its listener was lost, :meth:`Stage.catch_up` with the keys the registry's
change feed says changed.

A :class:`Memory` is a stage that answers from this process without awaiting: placed
first, it also serves the doors' synchronous fast path (``Resolver.cached``). Adding a
stage (referral, recursion, ...) means writing one class and naming it in the list; no
other stage changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import NamedTuple

from ..l1 import Entry


class Lookup(NamedTuple):
    """One handle on its way down the chain."""

    handle: str  # as the client wrote it
    key: str  # normalized: what caches and the registry are keyed by
    flags: int = 0  # the request's opFlag (REC: the client allows recursion)
    recursion_count: int = 0  # the request header's recursionCount


class Resolution(NamedTuple):
    """A finished answer: SUCCESS with the values, an error code and its message, or a
    referral (302/303): the handle to ask about instead, with its HS_SITE values."""

    response_code: int
    values_wire: bytes = b""  # int4 n + values, when SUCCESS or a referral (the sites)
    message: str = ""  # for error answers (and people, with a referral)
    referral: str = ""  # the referral handle of a 302/303

    @property
    def is_referral(self) -> bool:
        return bool(self.referral)


class Stage(ABC):
    """One job of the lookup chain; only :meth:`lookup` is required, the rest default to
    doing nothing."""

    # A cache may hold what a write changed: while the core cannot be sure it heard every
    # invalidation (Redis or its listener lost), lookups pass it by and it learns nothing.
    is_cache = False
    # Whether the stages before this one (L1) keep the entries it answers. A stage whose
    # answers depend on the request (recursion, for clients that allow it) keeps its own.
    answers_learnt = True

    @abstractmethod
    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        """An entry or a final answer ends the lookup; ``None`` asks the next stage."""

    def learn(self, q: Lookup, entry: Entry) -> None:
        """A later stage answered ``q`` with ``entry``: a cache keeps it."""
        return None

    def forget(self, keys: Sequence[str]) -> None:
        """Drop what this worker holds for ``keys`` (a write, here or on another worker)."""
        return None

    def forget_all(self) -> None:
        """Drop everything this worker holds (it cannot tell what changed)."""
        return None

    async def invalidate(self, keys: Sequence[str], position: str = "") -> None:
        """A write changed ``keys`` (committed at registry ``position``, "" if unknown):
        tell what is shared beyond this worker; raise if it cannot be told."""
        return None

    async def catch_up(
        self, keys: Sequence[str], *, everything: bool = False, position: str = ""
    ) -> None:
        """After an outage: ``keys`` changed while this worker may not have heard (from the
        registry's change feed); make what is shared forget them, or forget all it holds
        when ``everything`` (the feed no longer reaches back far enough). Raise if it
        cannot."""
        await self.invalidate(keys, position)

    async def drain(self) -> None:
        """Finish the work under way (graceful shutdown)."""
        return None


class Memory(Stage):
    """A stage that answers from this process's memory, synchronously."""

    @abstractmethod
    def recall(self, key: str) -> Entry | None:
        """The entry held for a normalized key, without awaiting anything."""

    @abstractmethod
    def holds(self, key: str, values: bytes | None) -> bool:
        """Whether the entry held for ``key`` has ``values``, the very object (a hit
        like :meth:`recall`, for the doors' kept answers)."""

    async def lookup(self, q: Lookup) -> Entry | Resolution | None:
        return self.recall(q.key)
