"""``idnode apikey create|list|revoke``: bearer keys acting as an administrator."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from idnode.registry.admin_tasks import open_registry
from idnode.registry.api_keys import create_api_key, list_api_keys, revoke_api_key
from idnode.registry.auth import Identity

from .options import EXIT_OK, CommandError, add_setting_flags, registry_settings


async def _run(args: argparse.Namespace) -> int:
    s = registry_settings(args)
    admin = None
    if args.action == "create":
        try:
            admin = Identity.parse(args.admin)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
    async with open_registry(s.database_url, s.case_sensitive) as store:
        if admin is not None:
            key = await create_api_key(store, admin, args.label)
            print(key)
            print(
                f"API key for {admin} created; only its SHA-256 is stored, so keep it now. "
                "Send it as gRPC metadata (authorization: Bearer <key>) or as a REST "
                "Authorization: Bearer header",
                file=sys.stderr,
            )
        elif args.action == "list":
            for k in await list_api_keys(store):
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(k.created_at))
                print(f"{k.id}\t{k.admin}\t{when}\t{k.label}")
        else:
            gone = await revoke_api_key(store, args.key)
            print(f"API key {gone.id} of {gone.admin} revoked")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "apikey",
        help="issue, list and revoke API keys (gRPC Registry service, REST API)",
        description="An API key acts as an admin key (INDEX:HANDLE) on the gRPC Registry "
        "service and the REST API (Authorization: Bearer KEY). It is printed once, when "
        "created; only its SHA-256 is stored, and its id is the first 12 hex digits of that.",
    )
    asub = p.add_subparsers(dest="action", metavar="ACTION")
    asub.required = True
    ac = asub.add_parser(
        "create", help="create a key (the admin must exist: a key at INDEX of HANDLE)"
    )
    ac.add_argument("--admin", required=True, help="the admin it acts as, e.g. 300:0.NA/88.166")
    ac.add_argument("--label", default="", help="a note for people (who holds it)")
    al = asub.add_parser("list", help="the keys: id, admin, created, label (never the key)")
    ar = asub.add_parser("revoke", help="delete a key; it stops working within 10 seconds")
    ar.add_argument("key", metavar="ID_OR_KEY", help="the id apikey list shows, or the key")
    for x in (ac, al, ar):
        add_setting_flags(x, ("database_url", "case_sensitive"))
        x.set_defaults(func=run)
