"""Bulk import of handles from JSON Lines, one handle per line:

    {"handle": "88.166.1001/ABC-1", "values": [{"index": 1, "type": "URL", "data": ...}]}

Values use the reference REST JSON shape. Lines are checked one by one; a bad line
is reported with its number and reason and never stops the good ones; good lines
are written in batches, each batch one statement in one transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from resolver.codec import ProtocolError, encode_values
from resolver.codec.jsonform import values_from_json

from .names import InvalidName, PrefixAuthority, check_handle
from .store import HandleRecord, Store


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def parse_line(text: str, authority: PrefixAuthority) -> HandleRecord:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(obj, dict):
        raise ValueError('a line must be a JSON object {"handle": ..., "values": [...]}')
    unknown = set(obj) - {"handle", "values"}
    if unknown:
        raise ValueError(f"unknown fields: {', '.join(sorted(unknown))}")
    handle = obj.get("handle")
    if not isinstance(handle, str):
        raise ValueError('"handle" must be a string')
    check_handle(handle)
    if not authority.serves(handle):
        raise ValueError(f"prefix of {handle!r} is not homed here (idnode init --prefix ...)")
    values = values_from_json(obj.get("values", []))
    return HandleRecord(handle, encode_values(values))


async def import_lines(
    store: Store,
    lines: Iterable[str],
    authority: PrefixAuthority,
    *,
    batch_size: int = 1000,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    batch: list[HandleRecord] = []
    for number, text in enumerate(lines, 1):
        report.lines = number
        if not text.strip():
            continue
        try:
            batch.append(parse_line(text, authority))
        except (ValueError, InvalidName, ProtocolError) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            report.rejected.append((number, reason))
            continue
        if len(batch) >= batch_size:
            report.imported += await store.put_many(batch)
            batch = []
            if progress is not None:
                progress(report)
    if batch:
        report.imported += await store.put_many(batch)
    if progress is not None:
        progress(report)
    return report
