"""The ``idnode`` command line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .codec.errors import ProtocolError

EXIT_OK = 0
EXIT_UNDECODABLE = 1
EXIT_USAGE = 2


def _is_file(arg: str) -> bool:
    # A long hex string is not a path; asking the OS would fail with ENAMETOOLONG.
    try:
        return Path(arg).is_file()
    except OSError:
        return False


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .inspect import INSPECTORS, parse_input

    src: str = args.input
    try:
        if src == "-":
            raw = sys.stdin.buffer.read()
        elif _is_file(src):
            raw = Path(src).read_bytes()
        else:
            raw = src.encode()
        data = parse_input(raw)
        if not data:
            raise ProtocolError("no bytes to decode")
        result = INSPECTORS[args.kind](data)
    except ProtocolError as exc:
        print(f"idnode inspect: cannot decode as a {args.kind}: {exc.reason}", file=sys.stderr)
        return EXIT_UNDECODABLE
    except OSError as exc:
        print(f"idnode inspect: cannot read {src}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    json.dump(result, sys.stdout, indent=None if args.compact else 2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="idnode",
        description="idnode: an industrial internet identifier resolution secondary node "
        "(Handle protocol, RFC 3652, with the IDIS extensions).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser(
        "inspect",
        help="decode Handle protocol bytes and print them as JSON",
        description="Decode Handle protocol bytes and print them as JSON. INPUT is hex text "
        "(spaces, colons and a 0x prefix are fine), a file of raw bytes or of hex, or - for "
        "standard input. Exit status: 0 decoded, 1 the bytes do not decode (the reason is "
        "printed on one line), 2 the input cannot be read.",
        epilog="example: idnode inspect 02010000000000000000000900000000000000210000000200"
        "00000019000000ffff00000000000000000005000000012f00000000",
    )
    p.add_argument("input", metavar="INPUT", help="hex string, file path, or - for stdin")
    p.add_argument(
        "--as",
        dest="kind",
        choices=("message", "value", "values", "site", "admin", "key"),
        default="message",
        help="what the bytes are: a whole message with envelope (default), one handle "
        "value, a value list (int4 n + values), or the data of HS_SITE, HS_ADMIN or HS_PUBKEY",
    )
    p.add_argument("--compact", action="store_true", help="print JSON on one line")
    p.set_defaults(func=_cmd_inspect)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
