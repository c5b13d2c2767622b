"""The ``idnode`` command line: it maps flags onto the registry's tasks and the node.

One module per command group (serve and demo, init, resolve, inspecting, templates,
apikeys, audit, importing, hierarchy, search_index; loadtest hands over to the
harness); what the commands do lives in the registry (idnode.registry.admin_tasks,
api_keys) and the node. An error the node raises (IdnodeError) ends a command with one
line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from idnode.errors import IdnodeError

from ..settings import ConfigError
from . import (
    apikeys,
    audit,
    hierarchy,
    importing,
    init,
    inspecting,
    loadtest,
    prefixes,
    resolve,
    search_index,
    serve,
    templates,
)
from .options import EXIT_USAGE, CommandError

EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report it
EXIT_PIPE_CLOSED = 141  # the reader went away (`idnode ... | head`), as shells report SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idnode",
        description="idnode: an industrial internet identifier resolution secondary node "
        "(Handle protocol, RFC 3652, with the IDIS extensions).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    inspecting.add_parser(sub)
    serve.add_parsers(sub)
    init.add_parser(sub)
    templates.add_parser(sub)
    apikeys.add_parser(sub)
    loadtest.add_parser(sub)
    audit.add_parser(sub)
    importing.add_parser(sub)
    resolve.add_parser(sub)
    hierarchy.add_parsers(sub)
    prefixes.add_parser(sub)
    search_index.add_parser(sub)
    return parser


def _pipe_closed() -> int:
    # Later writes (the interpreter flushes stdout at exit) must not raise again.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_PIPE_CLOSED


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        code = loadtest.main(argv[1:]) if argv[:1] == ["loadtest"] else _run(argv)
        sys.stdout.flush()  # here, not at exit: a closed pipe must fail inside the try
    except BrokenPipeError:
        return _pipe_closed()
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return code


def _run(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(argv)
    name = " ".join(filter(None, (args.command, getattr(args, "action", None))))
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"idnode: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except IdnodeError as exc:
        print(f"idnode {name}: {exc}", file=sys.stderr)
        return exc.code if isinstance(exc, CommandError) else EXIT_USAGE
    return code


__all__ = ["build_parser", "main"]
