"""``idnode search-index build|status|drop``: the value index behind reverse lookup
(``--search-index``, ``/hrls/handles``).

Turning search on for a registry that already holds handles: restart every node with
``--search-index`` (from then on each write keeps the index in step), then ``build``
fills it from every handle, a locked batch at a time, and marks it built; a node
answers searches once it is. ``drop`` empties it after search is turned off, so an
index that writes stopped keeping is never trusted again.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from idnode.registry.admin_tasks import open_registry
from idnode.registry.names import PrefixAuthority
from idnode.registry.permissions import Permissions
from idnode.registry.value_search import ValueSearch, switch_on

from .options import EXIT_OK, add_setting_flags, registry_settings


async def _run(args: argparse.Namespace) -> int:
    s = registry_settings(args)
    async with open_registry(s.database_url, s.case_sensitive) as store:
        search = ValueSearch(store, PrefixAuthority([], s.case_sensitive), Permissions(store))
        if args.action == "status":
            built = await search.built()
            size = await search.size_bytes()
            if built is None:
                print("not built (run `idnode search-index build`)")
            else:
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(built[0]))
                print(f"built {when}: {built[1]:,} handles indexed then")
            if size is not None:
                print(f"size: {size:,} bytes (search_values and its indexes)")
            return EXIT_OK
        if args.action == "drop":
            await search.drop()
            print("value index dropped; searches answer 503 until it is built again")
            return EXIT_OK
        switch_on(store)
        started = time.monotonic()
        tty = sys.stderr.isatty()

        def progress(done: int, total: int) -> None:
            width = 30
            filled = width * done // max(total, 1)
            line = f"[{'#' * filled}{'.' * (width - filled)}] {done:,}/{total:,} handles"
            if tty:
                print("\r" + line, end="", file=sys.stderr, flush=True)
            elif done == total or done % 100_000 < 2000:
                print(line, file=sys.stderr, flush=True)

        n = await search.build(progress)
        if tty:
            print(file=sys.stderr)
        took = time.monotonic() - started
        size = await search.size_bytes()
        extra = f", {size:,} bytes" if size is not None else ""
        print(f"value index built: {n:,} handles in {took:.1f} s{extra}")
        return EXIT_OK


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search-index",
        help="build, show or drop the value index behind reverse lookup (--search-index)",
        description="The value index answers GET /hrls/handles?URL=... (pyhandle's "
        "search_handle). build: fill it from every handle and mark it built (run it once "
        "every node runs with --search-index; safe to run again, e.g. after a bulk load). "
        "status: when it was built and its size. drop: empty it after turning search off.",
    )
    p.add_argument("action", choices=("build", "status", "drop"))
    add_setting_flags(p, ("database_url", "case_sensitive"))
    p.set_defaults(func=run)
