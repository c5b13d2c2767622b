"""L1: the per-worker in-process cache of pre-encoded value lists.

Bounded in bytes, each entry with its own expiry (value TTLs honoured). Not-found
answers are cached too, briefly, so random-key floods do not reach SQL.
:class:`Lifetimes` turns what a tier read into an entry with that expiry.

Eviction is CLOCK (second chance), not strict LRU: a hit marks its entry used and
leaves it where it is; to make room for a put, a used entry at the old end goes to the
new end once, unmarked, and the first unused one goes (then the new entry is put,
newest of all). Moving every hit's entry to the new end (``OrderedDict.move_to_end``)
touched the entry's two neighbours, which on a cache of 100,000 handles are cache
misses: a hit cost 1.7 us against 0.55 us marked in place (a micro-benchmark of 10^6
uniform hits). Each eviction looks at SECOND_CHANCES entries at most, so a cache whose
entries are all used costs no long walk: past that the oldest goes, used or not.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from typing import NamedTuple

from .codec import ProtocolError
from .codec.values import summarize_values

log = logging.getLogger("idnode.core")  # the lookup chain logs under the core's name

ENTRY_OVERHEAD = 200  # dict slot, tuple, key object: a rough per-entry cost in bytes


class Entry(NamedTuple):
    values_wire: bytes | None  # int4 n + values; None = the handle does not exist
    all_public: bool  # every value has PUBLIC_READ: the wire bytes go out as they are
    expires: float  # monotonic seconds


class Lifetimes(NamedTuple):
    """How long an entry may be served from L1: at most ``ttl``, less when a value's own
    TTL says so; a handle that does not exist for ``negative_ttl``."""

    ttl: float = 60.0
    negative_ttl: float = 5.0

    def entry(self, values_wire: bytes | None, now: float) -> Entry:
        """The entry for a value list read from a tier (None: the handle does not exist)."""
        if values_wire is None:
            return Entry(None, True, now + self.negative_ttl)
        try:
            all_public, min_relative, min_absolute = summarize_values(values_wire)
        except ProtocolError:
            # A corrupt row must not take the node down; it answers as not found and says so.
            log.error("registry row does not decode; serving it as not found")
            return Entry(None, True, now + self.negative_ttl)
        ttl = self.ttl
        if min_relative is not None:
            ttl = min(ttl, max(0, min_relative))
        if min_absolute is not None:
            ttl = min(ttl, max(0.0, min_absolute - time.time()))
        return Entry(values_wire, all_public, now + ttl)


# What the L1 holds for a key: an Entry's fields in a plain tuple, and whether it was
# used since it was put or last given its second chance. The collector untracks a plain
# tuple of atomic fields (bytes or None, bool, float) once it has seen it, and never an
# Entry (a tuple subclass): held as Entries, hundreds of thousands of them were walked
# by every full collection, a 40-130 ms stop each (idnode.resolver.gc_pauses).
Held = tuple[bytes | None, bool, float, bool]
_entry = tuple.__new__  # Held's fields -> Entry without the keyword handling of Entry(...)
SECOND_CHANCES = 16  # used entries sent round again, at most, to make room for one put


class L1Cache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._d: OrderedDict[str, Held] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._d)

    @property
    def bytes_used(self) -> int:
        return self._bytes

    def get(self, key: str, now: float) -> Entry | None:
        e = self._d.get(key)
        if e is None:
            return None
        if e[2] <= now:  # expired
            self._remove(key, e)
            return None
        if not e[3]:
            self._d[key] = e = (e[0], e[1], e[2], True)
        return _entry(Entry, e[:3])

    def holds(self, key: str, values: bytes | None, now: float) -> bool:
        """Whether ``key``'s live entry holds ``values``, the very object (an answer
        built from them is still the answer); a hit like :meth:`get`, without making an
        Entry. The steps of get written out again, not shared through a helper: it runs
        for every kept answer sent, and a call more is ~60 ns of its ~550."""
        e = self._d.get(key)
        if e is None or e[0] is not values:
            return False
        if e[2] <= now:
            self._remove(key, e)
            return False
        if not e[3]:
            self._d[key] = (e[0], e[1], e[2], True)
        return True

    def put(self, key: str, entry: Entry) -> None:
        if self.max_bytes <= 0:
            return
        d = self._d
        old = d.pop(key, None)
        if old is not None:
            self._bytes -= _cost(key, old)
        cost = _cost(key, entry)
        if cost > self.max_bytes:
            return
        # Room first, then the new entry at the new end: made after the walk, it is
        # never the one the walk reaches (behind the entries sent round, it would be).
        spared = 0
        while d and self._bytes + cost > self.max_bytes:
            k, e = d.popitem(last=False)
            if e[3] and spared < SECOND_CHANCES:
                d[k] = (e[0], e[1], e[2], False)  # used since it came round: once more
                spared += 1
                continue
            self._bytes -= _cost(k, e)
        d[key] = (entry.values_wire, entry.all_public, entry.expires, False)
        self._bytes += cost

    def invalidate(self, key: str) -> None:
        e = self._d.pop(key, None)
        if e is not None:
            self._bytes -= _cost(key, e)

    def clear(self) -> None:
        self._d.clear()
        self._bytes = 0

    def _remove(self, key: str, e: Held) -> None:
        del self._d[key]
        self._bytes -= _cost(key, e)


def _cost(key: str, e: Held | Entry) -> int:
    return len(key) + (len(e[0]) if e[0] else 0) + ENTRY_OVERHEAD
