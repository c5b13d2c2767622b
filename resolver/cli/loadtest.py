"""``idnode loadtest ...``: handed whole to the harness's own command line.

The harness (idnode.loadtest) is imported only when this command runs, and only through
its one entry point, idnode.loadtest.cli.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

HELP = "load-test harness: populate, run, scale, plan, report"


def main(argv: Sequence[str]) -> int:
    from idnode.loadtest.cli import main as loadtest_main

    return loadtest_main(argv)


def add_parser(sub: Any) -> None:
    # Listed in `idnode --help`; `idnode loadtest ...` itself never reaches this parser
    # (idnode.resolver.cli.main hands it to the harness first).
    p = sub.add_parser(
        "loadtest",
        help=HELP,
        description="The load-test harness: idnode loadtest --help lists its commands.",
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: main(args.rest))
