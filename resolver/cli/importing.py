"""``idnode import``: bulk-load handles from a JSON Lines file through the batch path."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from idnode.registry.admin_tasks import open_registry
from idnode.registry.names import PrefixAuthority

from .options import EXIT_OK, EXIT_UNDECODABLE, CommandError, add_setting_flags, registry_settings

if TYPE_CHECKING:
    from idnode.registry.importer import ImportReport

# The batch path and the node (for the site's servers) are imported when an import runs:
# at the top, they cost every other command ~0.5 s of start-up (idnode.resolver.node
# alone is ~0.8 s of imports), and the test suite runs the command line hundreds of times.


async def _import(args: argparse.Namespace) -> ImportReport:
    from idnode.registry.importer import IMPORTER, import_lines
    from idnode.registry.sealing import Sealer
    from idnode.registry.service import RegistryService

    from ..node import site_servers

    s = registry_settings(args)
    path = Path(args.file)
    if not path.is_file():
        raise CommandError(f"{path}: no such file (one JSON object per line)")
    started = time.monotonic()
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(r: ImportReport) -> None:
        now = time.monotonic()
        if tty and now - last[0] >= 0.5:
            last[0] = now
            rate = r.imported / max(now - started, 1e-9)
            print(
                f"\r  {r.lines:,} lines, {r.imported:,} imported, {len(r.rejected):,} rejected,"
                f" {rate:,.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    async with open_registry(s.database_url, s.case_sensitive) as store:
        authority = PrefixAuthority(await store.homed_prefixes(), s.case_sensitive)
        key = Path(s.secret_key_file)
        sealer = Sealer.from_file(key) if key.exists() else None
        # The operator running import on the node is trusted like a server admin; the
        # audit log names it "0:idnode-import".
        service = RegistryService(store, authority, sealer=sealer, server_admins=[IMPORTER])
        # One server of a multi-server site: lines that hash to another server are
        # rejected naming it (import each server's own lines on each server).
        service.writes.site = site_servers(s)
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            report = await import_lines(
                service, f, batch_size=args.batch_size, replace=args.replace, progress=progress
            )
    if tty:
        print(file=sys.stderr)
    return report


def run(args: argparse.Namespace) -> int:
    from idnode.registry.service import MAX_BATCH

    if not 1 <= args.batch_size <= MAX_BATCH:
        raise CommandError(f"--batch-size must be 1 to {MAX_BATCH}")
    started = time.monotonic()
    report = asyncio.run(_import(args))
    for number, reason in report.rejected[:50]:
        print(f"{args.file}:{number}: rejected: {reason}", file=sys.stderr)
    if len(report.rejected) > 50:
        print(f"... and {len(report.rejected) - 50} more rejected lines", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(
        f"imported {report.imported:,} handles from {report.lines:,} lines in {elapsed:.2f}s"
        f" ({report.imported / max(elapsed, 1e-9):,.0f}/s); {len(report.rejected):,} rejected"
    )
    return EXIT_OK if not report.rejected else EXIT_UNDECODABLE


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "import",
        help="bulk-load handles from a JSON Lines file",
        description='Load handles from a JSON Lines file, one {"handle": ..., "values": [...]} '
        "per line in the reference REST JSON shape, through the registry's batch path. Bad "
        "lines (a line without values among them) are reported with their line numbers and "
        "skipped; every good line is kept. A handle already registered with the same values "
        "is fine (re-running is safe); with other values it is rejected unless --replace. "
        "Exit status 1 if any line was rejected.",
    )
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="handles per statement (1 to 2000, default 1000)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace handles registered with other values (default: reject them)",
    )
    add_setting_flags(
        p,
        (
            "database_url",
            "case_sensitive",
            "secret_key_file",
            "site_servers",
            "site_server_id",
            "site_hash",
        ),
    )
    p.set_defaults(func=run)
