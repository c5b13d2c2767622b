"""``idnode audit``: the audit log of one handle."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from idnode.registry.admin_tasks import open_registry
from idnode.registry.store import AuditEntry

from ..codec.codes import rc_name
from .options import EXIT_OK, add_setting_flags, registry_settings


async def _entries(url: str, case_sensitive: bool, handle: str, limit: int) -> list[AuditEntry]:
    async with open_registry(url, case_sensitive) as store:
        return await store.audit_for(handle, limit)


def run(args: argparse.Namespace) -> int:
    s = registry_settings(args)
    rows = asyncio.run(_entries(s.database_url, s.case_sensitive, args.handle, args.limit))
    for r in reversed(rows):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.at))
        if args.json:
            entry = {
                "at": when,
                "actor": r.actor,
                "op": r.op,
                "handle": r.handle,
                "responseCode": r.rc,
                "response": rc_name(r.rc),
                "before": r.before_sha256,
                "after": r.after_sha256,
                "detail": r.detail,
            }
            print(json.dumps(entry, ensure_ascii=False))
        else:
            print(
                f"{when}  {r.op:<13} {rc_name(r.rc):<26} by {r.actor:<28} "
                f"{(r.before_sha256 or '-')[:12]} -> {(r.after_sha256 or '-')[:12]}  {r.detail}"
            )
    if not rows:
        print(f"no audit entries for {args.handle}", file=sys.stderr)
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "audit",
        help="show the audit log of a handle",
        description="Every accepted and refused write of a handle, oldest first: when, the "
        "operation, the response code, who (INDEX:HANDLE of the key), and SHA-256 digests "
        "of the value list before and after.",
    )
    p.add_argument("handle")
    p.add_argument("--limit", type=int, default=100, help="newest N entries (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    add_setting_flags(p, ("database_url", "case_sensitive"))
    p.set_defaults(func=run)
