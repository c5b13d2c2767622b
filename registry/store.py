"""The registry's stores: where handles and homed prefixes live.

Two backends behind one interface: SQLite (embedded default, a file in the working
directory) and PostgreSQL (production, through asyncpg with prepared statements).
Reads are batched (``get_many``): the resolver coalesces its misses into one query.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from .names import normalize, prefix_of


@dataclass(frozen=True, slots=True)
class HandleRecord:
    handle: str  # as registered
    values_wire: bytes  # resolver.codec.encode_values(...)


class StoreError(RuntimeError):
    """The store cannot be reached or refused an operation (not a lookup miss)."""


class Store(ABC):
    """A registry backend. Keys passed to ``get_many`` are already normalised."""

    def __init__(self, url: str, case_sensitive: bool = False) -> None:
        self.url = url
        self.case_sensitive = case_sensitive

    def key(self, handle: str) -> str:
        return normalize(handle, self.case_sensitive)

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """Value lists (``int4 n`` + values) of the keys that exist."""

    @abstractmethod
    async def put_many(self, records: Sequence[HandleRecord]) -> int:
        """Insert or replace whole handles in one statement; return how many were written."""

    @abstractmethod
    async def home_prefix(self, prefix: str, owner: str = "") -> None: ...

    @abstractmethod
    async def homed_prefixes(self) -> list[str]: ...

    @abstractmethod
    async def count_handles(self) -> int: ...

    def _rows(self, records: Sequence[HandleRecord]) -> list[tuple[str, str, str, bytes]]:
        # The last record wins when a batch names a handle twice: one statement
        # cannot update the same row twice on PostgreSQL.
        rows: dict[str, tuple[str, str, str, bytes]] = {}
        for r in records:
            k = self.key(r.handle)
            rows[k] = (k, r.handle, self.key(prefix_of(r.handle)), r.values_wire)
        return list(rows.values())


def now() -> int:
    return int(time.time())


def open_store(url: str, case_sensitive: bool = False) -> Store:
    """A store for ``sqlite:///PATH`` or ``postgresql://...`` (not yet opened)."""
    if url.startswith("sqlite:///"):
        from .sqlite_store import SqliteStore

        return SqliteStore(url, case_sensitive)
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres_store import PostgresStore

        return PostgresStore(url, case_sensitive)
    raise StoreError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB"
    )
