"""``idnode inspect``: decode Handle protocol bytes and print them as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..codec.errors import ProtocolError
from ..dissect import INSPECTORS, looks_like_hex, parse_input
from .options import EXIT_OK, EXIT_UNDECODABLE, EXIT_USAGE


def _is_file(arg: str) -> bool:
    # A long hex string is not a path; asking the OS would fail with ENAMETOOLONG.
    try:
        return Path(arg).is_file()
    except OSError:
        return False


def run(args: argparse.Namespace) -> int:
    src: str = args.input
    try:
        if src == "-":
            raw = sys.stdin.buffer.read()
        elif _is_file(src):
            raw = Path(src).read_bytes()
        elif looks_like_hex(src.encode()):
            raw = src.encode()
        else:
            # Neither hex nor a file: a path that is not there (never decode its text).
            print(
                f"idnode inspect: {src}: no such file (INPUT is hex text, a file or -)",
                file=sys.stderr,
            )
            return EXIT_USAGE
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


def add_parser(sub: Any) -> None:
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
    p.set_defaults(func=run)
