"""The value index (``--search-index``): which values of a handle are searchable, and
how a write keeps the ``search_values`` table in step with ``handles``.

A handle's values are stored as one packed wire blob (``handles.vals``), which SQL cannot
look into; reverse lookup ("which handles have URL = X?") needs its own table, one row per
searchable value: ``(handle key, TYPE, data)``, an index on ``(type, data)`` for the
search and a hash index on ``handle`` for the writes (a hash entry is ~20 bytes whatever
the handle's length, a b-tree on the handle would repeat it). The stores call
:func:`pg_sync` / :func:`sqlite_sync` inside the same transaction as the write of
``handles``, so the index never says what the registry does not (and a failed write
leaves neither changed).

Searchable: values any client could read anyway (PUBLIC_READ), whose type is not an
``HS_`` administration type (HS_ADMIN, HS_SECKEY, HS_PUBKEY, HS_VLIST, HS_SITE ... are
never searchable, whoever asks), whose type and data are UTF-8 text without NUL (PostgreSQL's
text refuses it: one such value would fail every write of its handle) and whose data is
at most :data:`MAX_DATA_BYTES` bytes (a b-tree entry has a size limit, and a search term longer
than this is not what reverse lookup is for). Types are upper-cased (the reverse-lookup
servlet's clients write ``URL`` or ``url``); data is kept as written (case-sensitive).

This module imports no store: the stores import it, and ``value_search.py`` (the queries
and who may run them) imports the stores.
"""

from __future__ import annotations

import sqlite3
import struct
from collections.abc import Iterable, Sequence
from typing import Any

from idnode.resolver.codec import Permission

MAX_DATA_BYTES = 512
ADMIN_TYPE_PREFIX = "HS_"

Item = tuple[str, bytes | None]  # (handle key, its new values; None when deleted)
Row = tuple[str, str, str]  # (handle key, TYPE, data)


_HEAD = struct.Struct(">iIBiB")  # index, timestamp, ttl type, ttl, permissions
_U32 = struct.Struct(">I")
_PUBLIC_READ = int(Permission.PUBLIC_READ)


def terms(vals: bytes) -> list[tuple[str, str]]:
    """The searchable (TYPE, data) pairs of a handle's values wire blob, without repeats.

    Walks the wire form (resolver/codec/values.py) without building the values: every
    write with the index on pays this, and ``decode_values`` was most of the index's
    cost to a batch write (loadtest/search_bench.py)."""
    out: dict[tuple[str, str], None] = {}
    try:
        (n,) = _U32.unpack_from(vals, 0)
        pos = 4
        for _ in range(n):
            permissions = _HEAD.unpack_from(vals, pos)[4]
            pos += _HEAD.size
            (tlen,) = _U32.unpack_from(vals, pos)
            kind_raw = vals[pos + 4 : pos + 4 + tlen]
            pos += 4 + tlen
            (dlen,) = _U32.unpack_from(vals, pos)
            data = vals[pos + 4 : pos + 4 + dlen]
            pos += 4 + dlen
            (nrefs,) = _U32.unpack_from(vals, pos)
            pos += 4
            for _ in range(nrefs):
                (rlen,) = _U32.unpack_from(vals, pos)
                pos += 4 + rlen + 4
            if pos > len(vals) or len(data) != dlen:
                return []  # truncated: never written by the registry's own writes
            if not permissions & _PUBLIC_READ or dlen > MAX_DATA_BYTES or b"\x00" in data:
                continue  # not for everyone; too long to index; NUL: not PostgreSQL text
            try:
                kind = kind_raw.decode("utf-8").upper()
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                continue  # binary data is not searched by text
            if kind and not kind.startswith(ADMIN_TYPE_PREFIX) and "\x00" not in kind:
                out[(kind, text)] = None  # NUL in the type: not PostgreSQL text either
    except struct.error:
        return []  # not the wire form: never written by the registry's own writes
    return list(out)


def rows_for(items: Iterable[Item]) -> list[Row]:
    return [(k, t, d) for k, vals in items if vals is not None for t, d in terms(vals)]


async def pg_sync(c: Any, items: Sequence[Item], created: Sequence[Item] = ()) -> None:
    """Make ``search_values`` say what ``items`` and ``created`` are, on asyncpg connection
    ``c`` inside the write's transaction: the old rows of ``items`` go, the new rows of
    both come. ``created`` are handles this transaction inserted: they had no rows to
    delete (a third of a batch's index cost, measured by loadtest/search_bench.py)."""
    if items:
        await c.execute(
            "DELETE FROM search_values WHERE handle = ANY($1::text[])", [k for k, _ in items]
        )
    rows = rows_for((*items, *created))
    if rows:
        cols = list(zip(*rows, strict=True))
        await c.execute(
            "INSERT INTO search_values (handle, type, data)"
            " SELECT * FROM unnest($1::text[], $2::text[], $3::text[])",
            list(cols[0]),
            list(cols[1]),
            list(cols[2]),
        )


def sqlite_sync(
    db: sqlite3.Connection, items: Sequence[Item], created: Sequence[Item] = ()
) -> None:
    """As :func:`pg_sync`, on SQLite inside the write's transaction."""
    db.executemany("DELETE FROM search_values WHERE handle = ?", [(k,) for k, _ in items])
    db.executemany(
        "INSERT INTO search_values (handle, type, data) VALUES (?, ?, ?)",
        rows_for((*items, *created)),
    )
