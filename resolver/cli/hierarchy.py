"""The node in the identifier hierarchy: ``idnode grant-prefix`` (on the node above: an
administrator for a derived prefix another node will serve) and ``idnode register-upward``
(on the node below: write this node's HS_SITE into ``0.NA/<prefix>`` at the node above,
as an authenticated Handle client, only when it is missing or changed)."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from idnode.registry.admin_tasks import AdminKey, grant_prefix, node_site_parts
from idnode.registry.auth import Identity

from ..client import AdminClient
from ..upstream.register import Upward, register_one
from .options import EXIT_OK, CommandError, add_setting_flags, settings

# What this node's HS_SITE is made of (serve reads the same settings).
SITE_SETTINGS = (
    "database_url",
    "case_sensitive",
    "listen",
    "advertise_address",
    "handle_port",
    "http_port",
    "site_serial",
)


def grant(args: argparse.Namespace) -> int:
    s = settings(args)
    who = asyncio.run(
        grant_prefix(
            s.database_url,
            args.prefix,
            key_file=s.secret_key_file,
            admin=AdminKey(args.admin_secret, args.admin_pubkey),
            case_sensitive=s.case_sensitive,
        )
    )
    print(
        f"0.NA/{args.prefix}: administrator {who} (HS_ADMIN at 100, key at 300); it may write "
        f"0.NA/{args.prefix} (idnode register-upward) and create 0.NA/{args.prefix}.*"
    )
    return EXIT_OK


def _client(args: argparse.Namespace) -> AdminClient:
    try:
        who = Identity.parse(args.admin)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    secret = None if args.key_file else args.secret.encode()
    # A key file that cannot be used is a ClientError: one line on stderr, exit 2.
    return Upward(args.top, who, secret, args.key_file, args.timeout).client()


def register_upward(args: argparse.Namespace) -> int:
    s = settings(args)
    homed, public = asyncio.run(node_site_parts(s.database_url, s.case_sensitive))
    prefixes = args.prefix or homed
    if not prefixes:
        raise CommandError("this node homes no prefix: run idnode init --prefix PREFIX first")
    unknown = [p for p in prefixes if p.upper() not in {h.upper() for h in homed}]
    if unknown:
        raise CommandError(f"not homed on this node: {', '.join(unknown)}")
    from ..node import site_info  # the node's modules load only for this command

    site = site_info(s, public)
    with _client(args) as client:  # a ClientError is one line on stderr, exit 2
        for p in prefixes:
            print(register_one(client, p, site))
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "grant-prefix",
        help="on the node above: an administrator for a derived prefix another node serves",
        description="Write 0.NA/PREFIX's administrator (HS_ADMIN at 100 naming "
        "300:0.NA/PREFIX, its key at 300) without homing PREFIX here. PREFIX must be under "
        "a prefix this node homes. That administrator may write 0.NA/PREFIX (its node's "
        "HS_SITE: idnode register-upward) and create 0.NA/PREFIX.*, nothing else.",
    )
    p.add_argument("--prefix", required=True, help="the derived prefix, e.g. 88.166")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--admin-secret", metavar="SECRET", help="the administrator's secret key")
    key.add_argument(
        "--admin-pubkey", metavar="PEM_FILE", help="the administrator's RSA or DSA public key"
    )
    add_setting_flags(p, ("database_url", "case_sensitive", "secret_key_file"))
    p.set_defaults(func=grant)

    p = sub.add_parser(
        "register-upward",
        help="write this node's HS_SITE into 0.NA/PREFIX at the node above",
        description="For each prefix this node homes (or --prefix), write this node's "
        "HS_SITE (its address, ports and server public key, as serve publishes it) into "
        "0.NA/PREFIX at the node above, authenticated as --admin: created, added or "
        "modified when missing or changed, left alone when it is up to date. Give the "
        "same settings (or --config) as idnode serve.",
    )
    p.add_argument("--top", required=True, metavar="HOST:PORT", help="the node above (Handle TCP)")
    p.add_argument("--admin", required=True, metavar="INDEX:HANDLE", help="e.g. 300:0.NA/88.166")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--secret", help="the administrator's secret key")
    key.add_argument("--key-file", metavar="PEM_FILE", help="the administrator's RSA private key")
    p.add_argument(
        "--prefix", action="append", default=[], help="only this homed prefix (repeatable)"
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds per answer (default 5)")
    add_setting_flags(p, SITE_SETTINGS)
    p.set_defaults(func=register_upward)
