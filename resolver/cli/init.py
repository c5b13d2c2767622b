"""``idnode init``: make or upgrade a registry and home prefixes on it."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from idnode.registry.admin_tasks import AdminKey, ServerKeyChoice, init_registry, upgrade_schema
from idnode.registry.partitions import check_count, ensure_partitions
from idnode.registry.store import StoreError

from .options import EXIT_OK, add_setting_flags, settings


def run(args: argparse.Namespace) -> int:
    s = settings(args)
    if args.partitions is not None:
        # Checked before anything is made; then the schema, then the partitioned table,
        # while the handles table is still empty (init writes 0.NA/ records into it).
        check_count(args.partitions)
        if not s.database_url.startswith(("postgresql://", "postgres://")):
            raise StoreError("--partitions needs a PostgreSQL registry (SQLite has no partitions)")
        upgrade_schema(s.database_url)
        print(asyncio.run(ensure_partitions(s.database_url, args.partitions)))
    report = asyncio.run(
        init_registry(
            s.database_url,
            args.prefix,
            owner=args.owner,
            key_file=s.secret_key_file,
            case_sensitive=s.case_sensitive,
            admin=AdminKey(args.admin_secret, args.admin_pubkey),
            server_key=ServerKeyChoice(
                args.server_key_algorithm,
                args.server_key_file,
                args.server_key_passphrase,
                args.new_server_key,
            ),
        )
    )
    print(f"server key: {report.server_key}; HS_SITE publishes its public key")
    print(f"registry ready at {s.database_url}; homed prefixes: {', '.join(report.homed)}")
    for a in report.admins:
        print(
            f"prefix admin {a} (HS_ADMIN at 100, key at 300); to let it home prefixes too, "
            f"serve with --server-admins {a}"
        )
    return EXIT_OK


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "init",
        help="create or upgrade the registry schema and home prefixes",
        description="Create or upgrade the registry schema (Alembic migrations) and home "
        "the given prefixes on this node. Safe to run again. A PostgreSQL database must "
        "exist (createdb NAME); an SQLite file is created.",
    )
    p.add_argument(
        "--prefix",
        action="append",
        required=True,
        help="a prefix this node serves, e.g. 88.166 (repeatable)",
    )
    p.add_argument("--owner", default="", help="who owns the prefix (free text)")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--admin-secret",
        metavar="SECRET",
        help="create the prefix admin 300:0.NA/PREFIX with this secret key "
        "(stored sealed under the node key)",
    )
    key.add_argument(
        "--admin-pubkey",
        metavar="PEM_FILE",
        help="create the prefix admin 300:0.NA/PREFIX with this RSA or DSA public key",
    )
    p.add_argument(
        "--server-key-algorithm",
        choices=("rsa", "dsa"),
        default="rsa",
        help="the server key pair init makes when the registry has none (or with "
        "--new-server-key): RSA-2048, or DSA-1024 as the reference server's setup makes "
        "(default: rsa). Certified answers are signed with it; session keys (CIPHER_SERVER) "
        "need RSA",
    )
    p.add_argument(
        "--server-key-file",
        metavar="FILE",
        help="use this private key as the server key instead: PEM, or the reference "
        "server's privkey.bin",
    )
    p.add_argument(
        "--server-key-passphrase",
        metavar="TEXT",
        help="the passphrase of an encrypted --server-key-file",
    )
    p.add_argument(
        "--new-server-key",
        action="store_true",
        help="replace the server key with a new one (clients holding the old HS_SITE then "
        "fail to verify certified answers until they fetch the new one)",
    )
    p.add_argument(
        "--partitions",
        type=int,
        metavar="N",
        help="PostgreSQL: make the handles table hash-partitioned on the handle into N "
        "(2..1024) partitions, for registries of hundreds of millions and more. Only on a "
        "new registry (an empty handles table); run again with the same N it does nothing, "
        "with another N it refuses (repartitioning is a dump and reload). Without the "
        "option, an existing table is left as it is",
    )
    add_setting_flags(p, ("database_url", "case_sensitive", "secret_key_file"))
    p.set_defaults(func=run)
