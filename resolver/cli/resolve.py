"""``idnode resolve``: a Handle client on the codec, printing the answer as JSON."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from idnode.registry.names import InvalidName, check_handle

from ..client import ClientError, exchange, resolution_request
from ..codec import ResponseCode
from ..codec.codes import rc_name
from ..dissect import body_to_json, message_to_json
from .options import EXIT_OK, EXIT_UNDECODABLE, EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    try:
        check_handle(args.handle)  # PREFIX/SUFFIX: never ask a server about a bare suffix
    except InvalidName as exc:
        print(f"idnode resolve: {exc}, e.g. 88.166.1001/HV-0001", file=sys.stderr)
        return EXIT_USAGE
    transport = "tcp" if args.tcp else "http" if args.http else "udp"
    server = args.server or ("127.0.0.1:8000" if transport == "http" else "127.0.0.1:2641")
    req = resolution_request(args.handle, types=tuple(args.type), indexes=tuple(args.index))
    try:
        m = exchange(server, req, transport, args.timeout)
    except ClientError as exc:
        print(f"idnode resolve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = (
        message_to_json(m)
        if args.full
        else {
            "responseCode": m.response_code,
            "response": rc_name(m.response_code),
            **body_to_json(m.body),
        }
    )
    json.dump(out, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")
    return EXIT_OK if m.response_code == ResponseCode.SUCCESS else EXIT_UNDECODABLE


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "resolve",
        help="resolve a handle against a Handle server",
        description="Resolve a handle (PREFIX/SUFFIX) over UDP (default), TCP or the HTTP "
        "tunnel and print the answer as JSON. Exit status 0 on success, 1 on any other "
        "response code, 2 when the handle is not PREFIX/SUFFIX or the server cannot be "
        "reached or answers with something that is not a Handle message.",
    )
    p.add_argument("handle")
    p.add_argument("--server", help="HOST:PORT (default 127.0.0.1:2641, or :8000 with --http)")
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--udp",
        action="store_true",
        help="UDP (the default; an error answer is asked again over TCP, as the reference "
        "client does)",
    )
    group.add_argument("--tcp", action="store_true", help="TCP")
    group.add_argument("--http", action="store_true", help="the HTTP tunnel (POST /)")
    p.add_argument(
        "--type",
        action="append",
        default=[],
        help='only values of this type (repeatable; "URL." matches sub-types)',
    )
    p.add_argument(
        "--index",
        action="append",
        default=[],
        type=int,
        help="only the value at this index (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("--full", action="store_true", help="print envelope and header too")
    p.set_defaults(func=run)
