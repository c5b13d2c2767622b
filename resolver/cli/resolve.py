"""``idnode resolve``: a Handle client on the codec, printing the answer as JSON."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import socket
import sys
from typing import Any

from idnode.registry.names import InvalidName, check_handle

from ..client import ClientError, exchange, parse_server, resolution_request
from ..codec import Interface, Message, ReferralResponse, ResponseCode, ServerInfo, SiteInfo
from ..codec.codes import InterfaceProtocol, InterfaceType, rc_name
from ..dissect import body_to_json, message_to_json
from ..upstream.root_info import RootInfoError, load_root_info
from ..upstream.walker import REFERRALS, Hop, Walker, WalkError
from .options import EXIT_OK, EXIT_UNDECODABLE, EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    try:
        check_handle(args.handle)  # PREFIX/SUFFIX: never ask a server about a bare suffix
    except InvalidName as exc:
        print(f"idnode resolve: {exc}, e.g. 88.166.1001/HV-0001", file=sys.stderr)
        return EXIT_USAGE
    transport = "tcp" if args.tcp else "http" if args.http else "udp"
    if args.root_info:
        return _from_root(args)
    server = args.server or ("127.0.0.1:8000" if transport == "http" else "127.0.0.1:2641")
    req = resolution_request(args.handle, types=tuple(args.type), indexes=tuple(args.index))
    try:
        m = exchange(server, req, transport, args.timeout)
    except ClientError as exc:
        print(f"idnode resolve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    first = Hop(1, args.handle, "(--server)", server, transport, m.response_code, _note(m))
    if m.response_code in REFERRALS and args.max_referrals > 0:
        # As the reference client does for any request it sends: a 302/303 is followed.
        try:
            site = _server_site(server, transport)
        except ClientError as exc:
            print(f"idnode resolve: {exc}", file=sys.stderr)
            return EXIT_USAGE
        walker = _walker(args, (site,))
        trace = _tracer(args)
        return _walked(
            args,
            lambda: walker.follow(
                m,
                args.handle,
                asked=site,
                first_hop=first,
                types=tuple(args.type),
                indexes=tuple(args.index),
                trace=trace,
            ),
        )
    if args.trace:
        print(first, file=sys.stderr)
    return _print(args, m)


def _note(m: Message) -> str:
    if m.response_code in REFERRALS and isinstance(m.body, ReferralResponse):
        return f"referral to {m.body.referral_handle}"
    return ""


def _tracer(args: argparse.Namespace) -> Any:
    if not args.trace:
        return None
    return lambda hop: print(hop, file=sys.stderr, flush=True)


def _walker(args: argparse.Namespace, roots: tuple[SiteInfo, ...]) -> Walker:
    return Walker(
        roots,
        timeout=args.timeout,
        max_referrals=args.max_referrals,
        certify=args.certify,
        udp=not args.tcp,
    )


def _server_site(server: str, transport: str) -> SiteInfo:
    """--server as a one-server site, so a referral back to it is seen as a loop."""
    host, port = parse_server(server, 8000 if transport == "http" else 2641)
    try:
        ip = str(ipaddress.ip_address(host))
    except ValueError:
        try:
            ip = str(socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][4][0])
        except OSError as exc:
            raise ClientError(f"cannot resolve {host}: {exc}") from None
    q = InterfaceType.QUERY
    ifaces = (Interface(q, InterfaceProtocol.UDP, port), Interface(q, InterfaceProtocol.TCP, port))
    return SiteInfo((ServerInfo.at(ip, 1, ifaces),))


def _from_root(args: argparse.Namespace) -> int:
    if args.http or args.server:
        print(
            "idnode resolve: --root-info finds the server itself; it takes neither "
            "--server nor --http",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        roots = load_root_info(args.root_info).sites
    except RootInfoError as exc:
        print(f"idnode resolve: {exc}", file=sys.stderr)
        return EXIT_USAGE
    walker = _walker(args, roots)
    trace = _tracer(args)
    return _walked(
        args,
        lambda: walker.resolve(
            args.handle, types=tuple(args.type), indexes=tuple(args.index), trace=trace
        ),
    )


def _walked(args: argparse.Namespace, walk: Any) -> int:
    try:
        result = asyncio.run(walk())
    except WalkError as exc:
        print(f"idnode resolve: {exc} ({rc_name(exc.rc)})", file=sys.stderr)
        # No server answered: as when --server cannot be reached. Otherwise the walk
        # ended on a response code (a loop, too many referrals, no such prefix).
        return EXIT_USAGE if exc.rc == ResponseCode.ERROR else EXIT_UNDECODABLE
    return _print(args, result.message)


def _print(args: argparse.Namespace, m: Message) -> int:
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
        "tunnel and print the answer as JSON; referrals (RC 302/303) are followed, and "
        "with --root-info the server is found from the root. Exit status 0 on success, "
        "1 on any other "
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
    p.add_argument(
        "--root-info",
        metavar="FILE",
        help="start from the root sites in FILE (the reference's root_info, a binary "
        "HS_SITE record as GetSiteInfo writes it, or siteinfo.json): ask the root for "
        "0.NA/PREFIX, then the server the handle hashes to in the site it names, "
        "following referrals",
    )
    p.add_argument(
        "--trace",
        action="store_true",
        help="print each request sent, where and what came back, on stderr (as HDLTrace)",
    )
    p.add_argument(
        "--max-referrals",
        type=int,
        default=8,
        metavar="N",
        help="follow at most N referrals (RC 302/303) and HS_SERV hops (default 8; 0: print "
        "a referral from --server as it is)",
    )
    p.add_argument(
        "--certify",
        action="store_true",
        help="with --root-info: ask for certified answers and check each signature with the "
        "server key in its site record",
    )
    p.add_argument("--timeout", type=float, default=5.0, help="seconds (default 5)")
    p.add_argument("--full", action="store_true", help="print envelope and header too")
    p.set_defaults(func=run)
