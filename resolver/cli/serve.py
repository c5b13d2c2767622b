"""``idnode serve`` and ``idnode demo``: run the node (the demo first loads its sandbox)."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
from typing import Any

from idnode.registry.admin_tasks import check_before_serving, load_demo

from ..settings import DEMO_DATABASE_URL, Settings
from .options import add_setting_flags, registry_settings, settings


def _serve(s: Settings) -> int:
    found = asyncio.run(check_before_serving(s.database_url, s.secret_key_file, s.case_sensitive))
    if found == "old schema":
        print(
            "idnode serve: the registry's schema is older than this idnode: run `idnode init "
            "--prefix PREFIX` to upgrade it (the node key is then checked at every start)",
            file=sys.stderr,
        )
    from ..listeners import bind_listeners

    # Bound here, once, before any worker: a port another node holds stops the start
    # with one line naming it (exit 2), and only this node's workers share the sockets.
    listeners = bind_listeners(s)
    if s.workers == 1:
        from ..node import run_worker

        return run_worker(s, listeners)
    from ..logs import setup_logging
    from ..supervisor import supervise

    setup_logging(s.log_level)
    return supervise(s, listeners)


def serve(args: argparse.Namespace) -> int:
    return _serve(registry_settings(args))


def demo(args: argparse.Namespace) -> int:
    if args.database_url is None:  # the demo keeps to its own registry, whatever the env
        args.database_url = DEMO_DATABASE_URL
    s = settings(args)
    secret = args.admin_secret or secrets.token_urlsafe(12)
    d = asyncio.run(
        load_demo(
            s.database_url,
            key_file=s.secret_key_file,
            secret=secret,
            case_sensitive=s.case_sensitive,
        )
    )
    print(f"server key: {d.init.server_key}; HS_SITE publishes its public key")
    print(f"registry ready at {s.database_url}; homed prefixes: {', '.join(d.init.homed)}")
    print(
        f"demo data: {d.handles} handles under 88.166 (enterprises 88.166.1001-1003), "
        f"template {d.template}"
    )
    print(f"administrator {d.admin} (every prefix of the demo), secret: {d.secret}")
    print(f"export SECRET='{d.secret}'   # for the README's write examples")
    print(f"try:  idnode resolve 88.166.1001/HV-0001 --server 127.0.0.1:{s.handle_port}")
    print(f"      curl -s http://127.0.0.1:{s.http_port}/healthz", flush=True)
    return _serve(s)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the node (Handle UDP/TCP, HTTP tunnel, /healthz, /metrics)",
        description="Run the node. Settings come from flags, then IDNODE_* environment "
        "variables, then the TOML file given by --config, then defaults. SIGTERM or Ctrl-C "
        "finish the requests in flight and stop. A node key file that is not the one the "
        "registry was made with stops the start.",
    )
    add_setting_flags(p)
    p.set_defaults(func=serve)

    p = sub.add_parser(
        "demo",
        help="a sandbox: load demo data into an embedded registry and serve it",
        description="Create sqlite:///idnode-demo.db (or --database-url), home 88.166 with "
        "its administrator 300:0.NA/88.166 (a new secret each start, printed), load three "
        "enterprises with a few identifiers each and the template they name, then serve "
        "as `idnode serve` does. Commands run in the same folder use this registry.",
    )
    p.add_argument(
        "--admin-secret",
        metavar="SECRET",
        help="the administrator's secret (default: a new random one, printed)",
    )
    add_setting_flags(p)
    p.set_defaults(func=demo)
