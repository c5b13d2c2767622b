"""``idnode prefix apply|list|show|approve|reject|suspend|suspended|resume``: the prefix lifecycle
(registry/prefix_applications.py) over a running node's REST API, so every decision goes
through the node (audited, its caches and every worker told at once).

apply needs no credentials (an enterprise applying); the others authenticate as a server
administrator (--admin INDEX:HANDLE --secret SECRET, as REST Basic)."""

from __future__ import annotations

import argparse
import base64
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from ..codec import encode_site
from .options import EXIT_OK, EXIT_UNDECODABLE, CommandError

APPLICATIONS = "/api/prefix-applications"
SUSPENDED = "/api/suspended-prefixes"


def call(args: argparse.Namespace, method: str, path: str, body: Any = None) -> int:
    """One REST request; prints the JSON answer. Exit 0 on success, 1 when refused."""
    headers = {"Content-Type": "application/json"}
    if getattr(args, "admin", None):
        if not args.secret:
            raise CommandError("--admin needs --secret")
        user = urllib.parse.quote(args.admin, safe="") + ":" + args.secret
        headers["Authorization"] = "Basic " + base64.b64encode(user.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    url = args.node.rstrip("/") + path
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=args.timeout) as r:
            text, ok = r.read().decode(), True
    except urllib.error.HTTPError as exc:
        text, ok = exc.read().decode(errors="replace"), False
    except (urllib.error.URLError, OSError) as exc:
        raise CommandError(f"cannot reach {args.node}: {exc}") from None
    try:
        print(json.dumps(json.loads(text), indent=2, ensure_ascii=False))
    except ValueError:
        print(text)
    return EXIT_OK if ok else EXIT_UNDECODABLE


def apply(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"prefix": args.prefix}
    if args.admin_secret is not None:
        body["adminSecret"] = args.admin_secret
    else:
        try:
            body["adminPublicKey"] = base64.b64encode(Path(args.admin_pubkey).read_bytes()).decode()
        except OSError as exc:
            raise CommandError(f"cannot read {args.admin_pubkey}: {exc.strerror}") from None
    if args.hosted:
        body["hosted"] = True
    elif args.site_from:
        # Asked here, in the CLI: the node never connects to an address a caller names.
        from ..client import ClientError
        from ..upstream.register import fetch_site

        try:
            site = fetch_site(args.site_from, timeout=min(args.timeout, 10.0))
        except ClientError as exc:
            raise CommandError(f"cannot get the HS_SITE of {args.site_from}: {exc}") from None
        body["site"] = base64.b64encode(encode_site(site)).decode()
    else:
        from ..upstream.root_info import load_root_info  # HS_SITE, root_info or JSON

        sites = load_root_info(args.site_file).sites
        body["site"] = base64.b64encode(encode_site(sites[0])).decode()
    contact = {k: v for k, v in vars(args).items() if k.startswith("contact_") and v}
    body["contact"] = {k[len("contact_") :]: v for k, v in contact.items()}
    return call(args, "POST", APPLICATIONS, body)


def list_applications(args: argparse.Namespace) -> int:
    q = {"status": args.status, "limit": args.limit, "after": args.after}
    query = urllib.parse.urlencode({k: v for k, v in q.items() if v})
    return call(args, "GET", APPLICATIONS + (f"?{query}" if query else ""))


def show(args: argparse.Namespace) -> int:
    return call(args, "GET", f"{APPLICATIONS}/{args.id}")


def approve(args: argparse.Namespace) -> int:
    return call(args, "POST", f"{APPLICATIONS}/{args.id}/approve", {"reason": args.reason})


def reject(args: argparse.Namespace) -> int:
    return call(args, "POST", f"{APPLICATIONS}/{args.id}/reject", {"reason": args.reason})


def suspend(args: argparse.Namespace) -> int:
    return call(args, "POST", f"{SUSPENDED}/{args.prefix}", {"reason": args.reason})


def suspended(args: argparse.Namespace) -> int:
    return call(args, "GET", SUSPENDED)


def resume(args: argparse.Namespace) -> int:
    return call(args, "DELETE", f"{SUSPENDED}/{args.prefix}")


def _common(p: argparse.ArgumentParser, *, operator: bool = True) -> None:
    p.add_argument(
        "--node", required=True, metavar="URL", help="the node's HTTP port, http://HOST:PORT"
    )
    if operator:
        p.add_argument("--admin", required=True, metavar="INDEX:HANDLE", help="a server admin")
        p.add_argument("--secret", required=True, help="its secret key (REST Basic)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")


def add_parser(sub: Any) -> None:
    top = sub.add_parser(
        "prefix",
        help="prefix applications, approvals and suspensions (the SNMS workflow)",
        description="An enterprise applies for a prefix under one the node homes; an "
        "operator (a server administrator) approves or rejects it, and may suspend and "
        "resume a prefix. Talks to a running node's REST API.",
    )
    cmds = top.add_subparsers(dest="prefix_command", metavar="ACTION")
    cmds.required = True

    p = cmds.add_parser("apply", help="apply for a prefix (an enterprise; no credentials)")
    _common(p, operator=False)
    p.add_argument("--prefix", required=True, help="e.g. 88.166.1001")
    key = p.add_mutually_exclusive_group(required=True)
    key.add_argument("--admin-secret", metavar="SECRET", help="the administrator's secret key")
    key.add_argument(
        "--admin-pubkey", metavar="FILE", help="the administrator's public key (PEM or admpub.bin)"
    )
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--hosted", action="store_true", help="identifiers registered here")
    where.add_argument(
        "--site-file",
        metavar="FILE",
        help="the enterprise node's HS_SITE (GetSiteInfo output, root_info or siteinfo.json)",
    )
    where.add_argument(
        "--site-from",
        metavar="HOST:PORT",
        help="ask the enterprise node for its HS_SITE (from here) and send it",
    )
    for field in ("organisation", "name", "email", "phone"):
        p.add_argument(f"--contact-{field}", default="", help=f"contact details: {field}")
    p.set_defaults(func=apply)

    p = cmds.add_parser("list", help="list applications (operator)")
    _common(p)
    p.add_argument("--status", choices=("pending", "approved", "rejected"))
    p.add_argument("--limit", type=int, help="how many, newest first (at most 100)")
    p.add_argument("--after", type=int, metavar="ID", help="the next page: older than ID")
    p.set_defaults(func=list_applications)

    p = cmds.add_parser("show", help="one application, with its upward registration (operator)")
    _common(p)
    p.add_argument("id", type=int)
    p.set_defaults(func=show)

    p = cmds.add_parser("approve", help="approve: create, home or delegate, register upward")
    _common(p)
    p.add_argument("id", type=int)
    p.add_argument("--reason", default="")
    p.set_defaults(func=approve)

    p = cmds.add_parser("reject", help="reject an application, with a reason (operator)")
    _common(p)
    p.add_argument("id", type=int)
    p.add_argument("--reason", required=True)
    p.set_defaults(func=reject)

    p = cmds.add_parser("suspend", help="suspend a prefix: RC 605 on every door (operator)")
    _common(p)
    p.add_argument("prefix")
    p.add_argument("--reason", default="")
    p.set_defaults(func=suspend)

    p = cmds.add_parser("suspended", help="list suspended prefixes (operator)")
    _common(p)
    p.set_defaults(func=suspended)

    p = cmds.add_parser("resume", help="resume a suspended prefix (operator)")
    _common(p)
    p.add_argument("prefix")
    p.set_defaults(func=resume)
