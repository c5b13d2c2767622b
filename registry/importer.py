"""Bulk import of handles from JSON Lines, one handle per line:

    {"handle": "88.166.1001/ABC-1", "values": [{"index": 1, "type": "URL", "data": ...}]}

Values use the reference REST JSON shape. Lines go through the registry service's
batch path, as every write does: each line is validated on its own, a bad line is
reported with its number and reason and never stops the good ones, and good lines
are written in batches (one statement and one transaction each). A handle already
registered with the same values is fine (re-running an import is safe); with other
values it is rejected unless ``replace``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from idnode.resolver.codec import HandleValue, ProtocolError, ResponseCode
from idnode.resolver.codec.codes import NOT_HOMED_MESSAGE
from idnode.resolver.codec.jsonform import values_from_json

from .auth import Identity
from .names import prefix_of
from .service import RegistryService
from .store import Refusal

IMPORTER = Identity("idnode-import", 0)  # the audit log's name for `idnode import`


@dataclass
class ImportReport:
    lines: int = 0
    imported: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)


def parse_line(text: str) -> tuple[str, tuple[HandleValue, ...]]:
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
    values = values_from_json(obj.get("values", []))
    if not values:  # a handle with no values resolves to nothing: never what was meant
        raise ValueError(f'{handle}: no "values" (a handle needs at least one value)')
    return handle, values


async def import_lines(
    service: RegistryService,
    lines: Iterable[str],
    *,
    batch_size: int = 1000,
    replace: bool = False,
    progress: Callable[[ImportReport], None] | None = None,
) -> ImportReport:
    report = ImportReport()
    batch: list[tuple[int, str, tuple[HandleValue, ...]]] = []

    async def flush() -> None:
        results = await service.batch_create(
            [(h, v) for _, h, v in batch], IMPORTER, replace=replace
        )
        for (number, _, _), (handle, rc, msg) in zip(batch, results, strict=True):
            if rc == ResponseCode.SUCCESS:
                report.imported += 1
            else:
                if (
                    rc == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
                    and msg == NOT_HOMED_MESSAGE
                ):
                    prefix = prefix_of(handle)
                    msg = f"prefix {prefix} is not homed here (idnode init --prefix {prefix})"
                report.rejected.append((number, f"{handle}: {msg}"))
        batch.clear()
        if progress is not None:
            progress(report)

    for number, text in enumerate(lines, 1):
        report.lines = number
        if not text.strip():
            continue
        try:
            handle, values = parse_line(text)
        except (ValueError, ProtocolError, Refusal) as exc:
            reason = exc.reason if isinstance(exc, ProtocolError) else str(exc)
            report.rejected.append((number, reason))
            continue
        batch.append((number, handle, values))
        if len(batch) >= batch_size:
            await flush()
    if batch:
        await flush()
    if progress is not None:
        progress(report)
    return report
