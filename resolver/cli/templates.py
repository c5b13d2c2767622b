"""``idnode template put|list|show``: industry metadata templates."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from idnode.registry.admin_tasks import (
    open_registry,
    publish_template,
    read_template_file,
    template_versions,
)

from ..codec import ResponseCode
from ..codec.codes import rc_name
from .options import EXIT_OK, EXIT_UNDECODABLE, add_setting_flags, registry_settings


async def _run(args: argparse.Namespace) -> int:
    s = registry_settings(args)
    doc: Any = read_template_file(args.file) if args.action == "put" else None
    async with open_registry(s.database_url, s.case_sensitive) as store:
        if args.action == "put":
            rc, message = await publish_template(store, doc)
            if rc != ResponseCode.SUCCESS:
                print(f"idnode template put: {rc_name(rc)}: {message}", file=sys.stderr)
                return EXIT_UNDECODABLE
            print(f"template {doc['prefix']} version {doc['version']} stored")
            return EXIT_OK
        found = await template_versions(store, args.prefix)
    if args.action == "list":
        for version, t in found.items():
            enabled = sum(i.enabled for i in t.items)
            print(
                f"{version}\t{t.industry}\t{enabled}/{len(t.items)} items enabled\t{t.description}"
            )
        return EXIT_OK
    shown = found.get(args.version)
    if shown is None:
        print(f"idnode template show: {args.prefix} has no version {args.version}", file=sys.stderr)
        return EXIT_UNDECODABLE
    print(json.dumps(json.loads(shown.to_json()), indent=2, ensure_ascii=False))
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "template",
        help="publish and read industry metadata templates",
        description="Templates say which values an identifier carries. An identifier names "
        "its template version in the value at index 1001 (type TEMPLATE); its values at "
        "indexes >= 2000 are then checked against that version. Versions never change and "
        'items are never deleted (set "enabled": false); publish a new version instead.',
    )
    tsub = p.add_subparsers(dest="action", metavar="ACTION")
    tsub.required = True
    tp = tsub.add_parser("put", help="publish a template version from a JSON file")
    tp.add_argument(
        "file",
        metavar="FILE.json",
        help='{"prefix", "version", "industry", "description", "items": [{"key", "index", '
        '"name", "type", "required", "enabled", "min_length", "max_length", "min", "max"}]}',
    )
    tl = tsub.add_parser("list", help="the versions of a prefix's templates")
    tl.add_argument("prefix")
    ts = tsub.add_parser("show", help="one template version as JSON")
    ts.add_argument("prefix")
    ts.add_argument("version")
    for x in (tp, tl, ts):
        add_setting_flags(x, ("database_url", "case_sensitive"))
        x.set_defaults(func=run)
