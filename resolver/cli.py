"""The ``idnode`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from idnode.registry.names import InvalidName
from idnode.registry.store import StoreError

from .codec.codes import rc_name
from .codec.errors import ProtocolError
from .dissect import body_to_json
from .settings import FIELDS, ConfigError, Settings, load_settings

EXIT_OK = 0
EXIT_UNDECODABLE = 1
EXIT_USAGE = 2
EXIT_FAIL = 3  # the work itself failed (a load test whose node or generator died)


def _is_file(arg: str) -> bool:
    # A long hex string is not a path; asking the OS would fail with ENAMETOOLONG.
    try:
        return Path(arg).is_file()
    except OSError:
        return False


def _cmd_inspect(args: argparse.Namespace) -> int:
    from .dissect import INSPECTORS, parse_input

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


def _settings(args: argparse.Namespace) -> Settings:
    flags = {name: getattr(args, name, None) for name in FIELDS}
    return load_settings(flags, config_file=getattr(args, "config", None))


def _cmd_serve(args: argparse.Namespace) -> int:
    s = _settings(args)
    if s.workers == 1:
        from .node import run_worker

        return run_worker(s)
    from .logs import setup_logging
    from .supervisor import supervise

    setup_logging(s.log_level)
    return supervise(s)


@dataclass(frozen=True)
class ServerKeyChoice:
    """What `idnode init` does about the server key pair."""

    algorithm: str = "rsa"
    import_file: str | None = None
    passphrase: str | None = None
    rotate: bool = False


def _init(
    s: Settings,
    prefixes: list[str],
    owner: str,
    admin_secret: str | None = None,
    admin_pubkey: str | None = None,
    server_key: ServerKeyChoice | None = None,
) -> int:
    from idnode.registry.migrate import upgrade
    from idnode.registry.names import check_prefix
    from idnode.registry.server_key import ServerKey, ServerKeyError

    for p in prefixes:
        check_prefix(p)
    choice = server_key or ServerKeyChoice()
    imported = None
    if choice.import_file:
        try:
            data = Path(choice.import_file).read_bytes()
            passphrase = choice.passphrase.encode() if choice.passphrase else None
            imported = ServerKey.from_file(data, passphrase)
        except (OSError, ServerKeyError) as exc:
            print(f"idnode init: cannot use {choice.import_file}: {exc}", file=sys.stderr)
            return EXIT_USAGE
    # Alembic runs its own event loop (asyncpg); it must not run inside ours.
    upgrade(s.database_url)
    pem = Path(admin_pubkey).read_bytes() if admin_pubkey else None
    return asyncio.run(_home(s, prefixes, owner, admin_secret, pem, choice, imported))


async def _home(
    s: Settings,
    prefixes: list[str],
    owner: str,
    admin_secret: str | None = None,
    admin_pubkey: bytes | None = None,
    choice: ServerKeyChoice | None = None,
    imported: Any = None,
) -> int:
    from idnode.registry.bootstrap import create_prefix_admin
    from idnode.registry.sealing import Sealer
    from idnode.registry.server_key import ServerKeyError, ensure_server_key
    from idnode.registry.store import open_store

    choice = choice or ServerKeyChoice()
    sealer = Sealer.from_file(s.secret_key_file, create=True)
    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    admins = []
    try:
        try:
            key, done = await ensure_server_key(
                store, sealer, algorithm=choice.algorithm, imported=imported, rotate=choice.rotate
            )
        except ServerKeyError as exc:
            print(f"idnode init: {exc}", file=sys.stderr)
            return EXIT_USAGE
        bits = key.private.key_size
        print(f"server key: {key.algorithm}-{bits} ({done}); HS_SITE publishes its public key")
        for p in prefixes:
            await store.home_prefix(p, owner)
            if admin_secret is not None or admin_pubkey is not None:
                admins.append(
                    await create_prefix_admin(
                        store,
                        p,
                        sealer=sealer,
                        secret=admin_secret.encode() if admin_secret is not None else None,
                        pubkey_pem=admin_pubkey,
                    )
                )
        homed = await store.homed_prefixes()
    finally:
        await store.close()
    print(f"registry ready at {s.database_url}; homed prefixes: {', '.join(sorted(homed))}")
    for a in admins:
        print(
            f"prefix admin {a} (HS_ADMIN at 100, key at 300); to let it home prefixes too, "
            f"serve with --server-admins {a}"
        )
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    choice = ServerKeyChoice(
        args.server_key_algorithm,
        args.server_key_file,
        args.server_key_passphrase,
        args.new_server_key,
    )
    return _init(
        _settings(args), args.prefix, args.owner, args.admin_secret, args.admin_pubkey, choice
    )


async def _audit(s: Settings, handle: str, limit: int, as_json: bool) -> int:
    from idnode.registry.store import open_store

    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    try:
        rows = await store.audit_for(handle, limit)
    finally:
        await store.close()
    for r in reversed(rows):
        when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(r.at))
        if as_json:
            print(
                json.dumps(
                    {
                        "at": when,
                        "actor": r.actor,
                        "op": r.op,
                        "handle": r.handle,
                        "responseCode": r.rc,
                        "response": rc_name(r.rc),
                        "before": r.before_sha256,
                        "after": r.after_sha256,
                        "detail": r.detail,
                    },
                    ensure_ascii=False,
                )
            )
        else:
            print(
                f"{when}  {r.op:<13} {rc_name(r.rc):<26} by {r.actor:<28} "
                f"{(r.before_sha256 or '-')[:12]} -> {(r.after_sha256 or '-')[:12]}  {r.detail}"
            )
    if not rows:
        print(f"no audit entries for {handle}", file=sys.stderr)
    return EXIT_OK


async def _template(s: Settings, args: argparse.Namespace) -> int:
    from idnode.registry.importer import IMPORTER
    from idnode.registry.names import PrefixAuthority
    from idnode.registry.service import RegistryService
    from idnode.registry.store import open_store

    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    try:
        svc = RegistryService(
            store,
            PrefixAuthority(await store.homed_prefixes(), s.case_sensitive),
            server_admins=[IMPORTER],
        )
        if args.action == "put":
            try:
                doc = json.loads(Path(args.file).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                print(f"idnode template put: cannot read {args.file}: {exc}", file=sys.stderr)
                return EXIT_USAGE
            r = await svc.put_template(doc, IMPORTER)
            if not r.ok:
                print(f"idnode template put: {rc_name(r.code)}: {r.message}", file=sys.stderr)
                return EXIT_UNDECODABLE
            print(f"template {doc['prefix']} version {doc['version']} stored")
            return EXIT_OK
        found = await svc.templates.of_prefix(args.prefix, fresh=True)
        if args.action == "list":
            for version, t in found.items():
                enabled = sum(i.enabled for i in t.items)
                print(
                    f"{version}\t{t.industry}\t{enabled}/{len(t.items)} items enabled\t"
                    f"{t.description}"
                )
            return EXIT_OK
        shown = found.get(args.version)
        if shown is None:
            print(
                f"idnode template show: {args.prefix} has no version {args.version}",
                file=sys.stderr,
            )
            return EXIT_UNDECODABLE
        print(json.dumps(json.loads(shown.to_json()), indent=2, ensure_ascii=False))
        return EXIT_OK
    finally:
        await store.close()


def _cmd_template(args: argparse.Namespace) -> int:
    return asyncio.run(_template(_settings(args), args))


async def _apikey(s: Settings, admin: str, label: str) -> int:
    import hashlib
    import secrets

    from idnode.registry.auth import Identity
    from idnode.registry.store import open_store

    who = Identity.parse(admin)
    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    try:
        key = "idn_" + secrets.token_urlsafe(32)
        await store.add_api_key(
            hashlib.sha256(key.encode()).hexdigest(), who.handle, who.index, label
        )
    finally:
        await store.close()
    print(key)
    print(
        f"API key for {who} created; only its SHA-256 is stored, so keep it now. Send it "
        "as gRPC metadata: authorization: Bearer <key>",
        file=sys.stderr,
    )
    return EXIT_OK


def _cmd_apikey(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_apikey(_settings(args), args.admin, args.label))
    except ValueError as exc:
        print(f"idnode apikey: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _cpus(text: str) -> list[int]:
    """ "0", "0,2", "2-5" → CPU numbers."""
    out: list[int] = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.extend(range(int(a), int(b or a) + 1))
    return out


def _run_config(args: argparse.Namespace) -> Any:
    from idnode.loadtest.run import RunConfig

    return RunConfig(
        doors=[d for d in args.doors.split(",") if d],
        mode=args.mode,
        rates=[float(r) for r in args.rates.split(",") if r],
        windows=[int(w) for w in args.windows.split(",") if w],
        seconds=args.seconds,
        warmup=args.warmup,
        generators=args.generators,
        distribution=args.distribution,
        miss_share=args.miss_share,
        mix=args.mix,
        batch=args.batch,
        registry_size=int(float(args.registry_size)),
        database_url=args.database_url or "",
        redis_url=args.redis_url or "",
        l1_mb=args.l1_mb,
        server_cpus=_cpus(args.server_cpus),
        load_cpus=_cpus(args.load_cpus),
        attach=args.attach or "",
        ceilings=not args.no_ceilings,
        prefill=args.prefill,
        results=args.results or "",
        label=args.label,
    )


def _cmd_loadtest_run(args: argparse.Namespace) -> int:
    from idnode.loadtest.run import run, save

    try:
        cfg = _run_config(args)
        report = run(cfg)
    except (ValueError, RuntimeError) as exc:
        print(f"idnode loadtest run: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    folder = save(report, cfg.results or None)
    print(f"report: {folder / 'report.html'} and {folder / 'report.json'}")
    return EXIT_OK


def _cmd_loadtest_scale(args: argparse.Namespace) -> int:
    from idnode.loadtest.run import save
    from idnode.loadtest.scale import ensure_database, scale

    try:
        cfg = _run_config(args)
        urls = list(args.database_url_list or [])
        if args.sizes:
            if not args.server_url:
                raise ValueError("--sizes needs --server-url (where databases may be created)")
            say = lambda m: print(m, file=sys.stderr)  # noqa: E731
            urls += [
                ensure_database(args.server_url, int(float(n)), say)
                for n in args.sizes.split(",")
                if n
            ]
        if not urls:
            raise ValueError("give --database-url (repeatable) or --server-url with --sizes")
        result = scale(urls, cfg, prewarm=not args.no_prewarm)
    except (ValueError, RuntimeError) as exc:
        print(f"idnode loadtest scale: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAIL
    report = result["runs"][-1] | {"scale": result["scale"], "doors": {}}
    report["label"] = cfg.label or "scale"
    folder = save(report | {"scale_runs": result["runs"]}, cfg.results or None)
    fit = result["scale"].get("fit")
    if fit:
        print(fit["text"])
    print(f"report: {folder / 'report.html'} and {folder / 'report.json'}")
    return EXIT_OK


def _cmd_loadtest_report(args: argparse.Namespace) -> int:
    from idnode.loadtest.report_page import render

    try:
        report = json.loads(Path(args.report).read_text())
    except (OSError, ValueError) as exc:
        print(f"idnode loadtest report: cannot read {args.report}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.html or Path(args.report).with_suffix(".html"))
    out.write_text(render(report))
    print(out)
    return EXIT_OK


def _cmd_loadtest(args: argparse.Namespace) -> int:
    if args.action == "plan":
        from dataclasses import fields

        from idnode.loadtest.plan import Plan, render

        plan = Plan(**{f.name: getattr(args, f.name) for f in fields(Plan)}).compute()
        print(json.dumps(plan, indent=2) if args.json else render(plan))
        return EXIT_OK
    from idnode.loadtest.populate import bar, populate_postgres, populate_sqlite
    from idnode.registry.migrate import upgrade

    s = _settings(args)
    upgrade(s.database_url)
    progress = bar("populate", args.count)
    if s.database_url.startswith("sqlite:///"):
        report = populate_sqlite(
            s.database_url[len("sqlite:///") :],
            args.start,
            args.count,
            chunk=args.chunk,
            progress=progress,
        )
    else:
        import asyncpg

        try:
            report = asyncio.run(
                populate_postgres(
                    s.database_url,
                    args.start,
                    args.count,
                    chunk=args.chunk,
                    parallel=args.parallel,
                    partitions=args.partitions,
                    progress=progress,
                )
            )
        except ValueError as exc:
            print(f"idnode loadtest populate: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except asyncpg.UniqueViolationError as exc:
            print(
                f"idnode loadtest populate: {exc.detail or exc}: the slice overlaps identifiers "
                "already loaded (use --start past them); chunks before the failing one stay",
                file=sys.stderr,
            )
            return EXIT_FAIL
    print(json.dumps(report, indent=2))
    return EXIT_OK


def _cmd_audit(args: argparse.Namespace) -> int:
    return asyncio.run(_audit(_settings(args), args.handle, args.limit, args.json))


async def _import(s: Settings, path: str, batch_size: int, replace: bool) -> int:
    from idnode.registry.importer import IMPORTER, ImportReport, import_lines
    from idnode.registry.names import PrefixAuthority
    from idnode.registry.sealing import Sealer
    from idnode.registry.service import MAX_BATCH, RegistryService
    from idnode.registry.store import open_store

    if not 1 <= batch_size <= MAX_BATCH:
        print(f"idnode import: --batch-size must be 1 to {MAX_BATCH}", file=sys.stderr)
        return EXIT_USAGE
    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    started = time.monotonic()
    tty = sys.stderr.isatty()
    last = [0.0]

    def progress(r: ImportReport) -> None:
        now = time.monotonic()
        if tty and now - last[0] >= 0.5:
            last[0] = now
            rate = r.imported / max(now - started, 1e-9)
            print(
                f"\r  {r.lines:,} lines, {r.imported:,} imported, {len(r.rejected):,} rejected,"
                f" {rate:,.0f}/s",
                end="",
                file=sys.stderr,
                flush=True,
            )

    try:
        authority = PrefixAuthority(await store.homed_prefixes(), s.case_sensitive)
        sealer = Sealer.from_file(s.secret_key_file) if Path(s.secret_key_file).exists() else None
        # The operator running import on the node is trusted like a server admin; the
        # audit log names it "0:idnode-import".
        service = RegistryService(store, authority, sealer=sealer, server_admins=[IMPORTER])
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            report = await import_lines(
                service, f, batch_size=batch_size, replace=replace, progress=progress
            )
    finally:
        await store.close()
    if tty:
        print(file=sys.stderr)
    for number, reason in report.rejected[:50]:
        print(f"{path}:{number}: rejected: {reason}", file=sys.stderr)
    if len(report.rejected) > 50:
        print(f"... and {len(report.rejected) - 50} more rejected lines", file=sys.stderr)
    elapsed = time.monotonic() - started
    print(
        f"imported {report.imported:,} handles from {report.lines:,} lines in {elapsed:.2f}s"
        f" ({report.imported / max(elapsed, 1e-9):,.0f}/s); {len(report.rejected):,} rejected"
    )
    return EXIT_OK if not report.rejected else EXIT_UNDECODABLE


def _cmd_import(args: argparse.Namespace) -> int:
    return asyncio.run(_import(_settings(args), args.file, args.batch_size, args.replace))


def _cmd_resolve(args: argparse.Namespace) -> int:
    from .client import ClientError, exchange, resolution_request
    from .dissect import message_to_json

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
    return EXIT_OK if m.response_code == 1 else EXIT_UNDECODABLE


async def _load_demo(s: Settings) -> None:
    from idnode.registry.demo import NODE_PREFIX, TEMPLATE, demo_records
    from idnode.registry.store import open_store
    from idnode.registry.templates import parse_template

    store = open_store(s.database_url, s.case_sensitive)
    await store.open()
    try:
        n = await store.put_many(demo_records(int(time.time())))
        await store.put_template(
            NODE_PREFIX, str(TEMPLATE["version"]), parse_template(TEMPLATE).to_json(), "demo"
        )
    finally:
        await store.close()
    print(
        f"demo data: {n} handles under {NODE_PREFIX} (enterprises 88.166.1001-1003), "
        f"template {TEMPLATE['version']}"
    )
    print(f"try:  idnode resolve 88.166.1001/HV-0001 --server 127.0.0.1:{s.handle_port}")
    print(f"      curl -s http://127.0.0.1:{s.http_port}/healthz")


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.database_url is None:
        args.database_url = "sqlite:///idnode-demo.db"
    s = _settings(args)
    from idnode.registry.demo import NODE_PREFIX

    _init(s, [NODE_PREFIX], "demo")
    asyncio.run(_load_demo(s))
    return _cmd_serve(args)


def _add_settings(p: argparse.ArgumentParser, only: tuple[str, ...] | None = None) -> None:
    p.add_argument("--config", metavar="FILE", help="TOML settings file (also IDNODE_CONFIG)")
    for name, f in FIELDS.items():
        if only is not None and name not in only:
            continue
        flag = "--" + name.replace("_", "-")
        env = "IDNODE_" + name.upper()
        help_text = f"{f.metadata.get('help', '')} [env {env}; default {f.default!r}]"
        if f.type in ("bool", bool):
            p.add_argument(
                flag, dest=name, action="store_const", const=True, default=None, help=help_text
            )
        else:
            p.add_argument(
                flag, dest=name, default=None, metavar=name.split("_")[-1].upper(), help=help_text
            )


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--doors",
        default="udp",
        help="comma-separated: udp, tcp, http (Handle over HTTP), rest, grpc, grpc-batch, "
        "grpc-stream",
    )
    p.add_argument("--mode", choices=("closed", "open"), default="closed")
    p.add_argument(
        "--rates", default="20000", help="open loop: offered requests/s, comma-separated points"
    )
    p.add_argument(
        "--windows", default="64", help="closed loop: requests in flight per generator, points"
    )
    p.add_argument("--seconds", type=float, default=5.0, help="measuring time per point")
    p.add_argument("--warmup", type=float, default=1.0, help="warm-up per point (not measured)")
    p.add_argument("--generators", type=int, default=1, help="generator processes")
    p.add_argument("--distribution", choices=("zipfian", "uniform", "hotset"), default="zipfian")
    p.add_argument(
        "--miss-share", type=float, default=0.0, help="share of lookups for unregistered ids"
    )
    p.add_argument(
        "--mix", choices=("A", "B", "C"), default="C", help="YCSB: A 50%% updates, B 5%%, C reads"
    )
    p.add_argument("--batch", type=int, default=100, help="grpc-batch: identifiers per call")
    p.add_argument(
        "--registry-size",
        default="0",
        help="identifiers 0..N-1 to draw from (0: count the registry; 100000 for the "
        "throwaway one)",
    )
    p.add_argument("--redis-url", help="give the node this Redis (L2); default: none")
    p.add_argument("--l1-mb", type=int, default=64, help="the node's L1 per worker (0: off)")
    p.add_argument("--server-cpus", default="0", help="CPUs for the node (one worker each)")
    p.add_argument("--load-cpus", default="1", help="CPUs the generators are spread over")
    p.add_argument(
        "--attach",
        metavar="HOST:HANDLE:HTTP:GRPC",
        help="drive a running node instead of starting one (its ports)",
    )
    p.add_argument("--no-ceilings", action="store_true", help="skip the ceiling servers")
    p.add_argument(
        "--prefill",
        action="store_true",
        help="resolve every identifier once (gRPC BatchResolve) before measuring each door, "
        "so L1 and Redis start full (steady state) instead of cold",
    )
    p.add_argument("--results", help="folder for report.json and report.html")
    p.add_argument("--label", default="", help="a title for the report")


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

    p = sub.add_parser(
        "serve",
        help="run the node (Handle UDP/TCP, HTTP tunnel, /healthz, /metrics)",
        description="Run the node. Settings come from flags, then IDNODE_* environment "
        "variables, then the TOML file given by --config, then defaults. SIGTERM or Ctrl-C "
        "finish the requests in flight and stop.",
    )
    _add_settings(p)
    p.set_defaults(func=_cmd_serve)

    p = sub.add_parser(
        "init",
        help="create or upgrade the registry schema and home prefixes",
        description="Create or upgrade the registry schema (Alembic migrations) and home "
        "the given prefixes on this node. Safe to run again.",
    )
    p.add_argument(
        "--prefix",
        action="append",
        required=True,
        help="a prefix this node serves, e.g. 88.166 (repeatable)",
    )
    p.add_argument("--owner", default="", help="who owns the prefix (free text)")
    key = p.add_mutually_exclusive_group()
    key.add_argument(
        "--admin-secret",
        metavar="SECRET",
        help="create the prefix admin 300:0.NA/PREFIX with this secret key "
        "(stored sealed under the node key)",
    )
    key.add_argument(
        "--admin-pubkey",
        metavar="PEM_FILE",
        help="create the prefix admin 300:0.NA/PREFIX with this RSA or DSA public key",
    )
    p.add_argument(
        "--server-key-algorithm",
        choices=("rsa", "dsa"),
        default="rsa",
        help="the server key pair init makes when the registry has none (or with "
        "--new-server-key): RSA-2048, or DSA-1024 as the reference server's setup makes "
        "(default: rsa). Certified answers are signed with it; session keys (CIPHER_SERVER) "
        "need RSA",
    )
    p.add_argument(
        "--server-key-file",
        metavar="FILE",
        help="use this private key as the server key instead: PEM, or the reference "
        "server's privkey.bin",
    )
    p.add_argument(
        "--server-key-passphrase",
        metavar="TEXT",
        help="the passphrase of an encrypted --server-key-file",
    )
    p.add_argument(
        "--new-server-key",
        action="store_true",
        help="replace the server key with a new one (clients holding the old HS_SITE then "
        "fail to verify certified answers until they fetch the new one)",
    )
    _add_settings(p, ("database_url", "case_sensitive", "secret_key_file"))
    p.set_defaults(func=_cmd_init)

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
    _add_settings(tp, ("database_url", "case_sensitive"))
    tl = tsub.add_parser("list", help="the versions of a prefix's templates")
    tl.add_argument("prefix")
    _add_settings(tl, ("database_url", "case_sensitive"))
    ts = tsub.add_parser("show", help="one template version as JSON")
    ts.add_argument("prefix")
    ts.add_argument("version")
    _add_settings(ts, ("database_url", "case_sensitive"))
    for x in (tp, tl, ts):
        x.set_defaults(func=_cmd_template)

    p = sub.add_parser(
        "apikey",
        help="issue API keys for the gRPC Registry service",
        description="Issue an API key that acts as an admin key (INDEX:HANDLE) on the gRPC "
        "Registry service. The key is printed once; only its SHA-256 is stored.",
    )
    asub = p.add_subparsers(dest="action", metavar="ACTION")
    asub.required = True
    ac = asub.add_parser("create", help="create a key")
    ac.add_argument("--admin", required=True, help="the admin it acts as, e.g. 300:0.NA/88.166")
    ac.add_argument("--label", default="", help="a note for people (who holds it)")
    _add_settings(ac, ("database_url", "case_sensitive"))
    ac.set_defaults(func=_cmd_apikey)

    p = sub.add_parser(
        "loadtest",
        help="load-test harness: populate, run, scale, plan",
        description="The load-test harness. `populate` bulk-loads identifiers 0..N-1 of the "
        "deterministic key space (PostgreSQL binary COPY, or batched SQLite inserts) and "
        "reports rows/s and bytes per identifier. `plan` prints the hardware a node needs "
        "for a number of registrations and a lookup rate, with its assumptions. `run` drives a "
        "node through its front doors, beside each door's ceiling; `scale` measures the cost "
        "of a lookup at several registry sizes.",
    )
    lsub = p.add_subparsers(dest="action", metavar="ACTION")
    lsub.required = True
    lp = lsub.add_parser("populate", help="bulk-load a slice of the key space")
    lp.add_argument("--count", type=int, required=True, help="identifiers to load")
    lp.add_argument("--start", type=int, default=0, help="first index (to load in slices)")
    lp.add_argument("--chunk", type=int, default=50_000, help="rows per COPY / transaction")
    lp.add_argument(
        "--parallel",
        type=int,
        default=2,
        help="COPY streams into PostgreSQL (default 2: one per core here)",
    )
    lp.add_argument(
        "--partitions",
        type=int,
        default=0,
        help="PostgreSQL: first make the (empty) handles table hash-partitioned into this "
        "many partitions (for registries of hundreds of millions and more)",
    )
    _add_settings(lp, ("database_url",))
    lp.set_defaults(func=_cmd_loadtest)
    lr = lsub.add_parser(
        "run",
        help="drive a node through its front doors; report beside each door's ceiling",
        description="Start idnode serve (or --attach to one), drive it through each door in "
        "--doors with generator processes, open loop at --rates or closed loop at --windows, "
        "and measure each door's ceiling (the same protocol with nothing behind it) in the "
        "same run. Writes report.json and report.html (charts) to --results "
        "(default results/<time>). Servers listen on loopback; load goes to loopback.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_run_flags(lr)
    lr.add_argument(
        "--database-url",
        help="a populated registry (idnode loadtest populate); default: a throwaway SQLite "
        "registry of --registry-size identifiers",
    )
    lr.set_defaults(func=_cmd_loadtest_run)
    ls = lsub.add_parser(
        "scale",
        help="the same lookups at several registry sizes, and a fit of the cost",
        description="Lookups that all reach SQL (L1 and Redis off, uniform over the key space, "
        "closed loop) against registries of several sizes, then a least-squares fit of "
        "microseconds per lookup against log10(size), extrapolated to 1.5e9. Sizes come from "
        "--database-url (repeat it) or --server-url with --sizes (databases idnode_lt_<N>, "
        "populated when missing and kept).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_run_flags(ls)
    ls.add_argument(
        "--database-url", dest="database_url_list", action="append", help="a populated registry"
    )
    ls.add_argument("--server-url", help="a PostgreSQL server URL where databases may be created")
    ls.add_argument("--sizes", help="registry sizes, e.g. 1e6,1e7,1e8")
    ls.add_argument(
        "--no-prewarm",
        action="store_true",
        help="do not read the primary key into the page cache first (pg_prewarm)",
    )
    ls.set_defaults(func=_cmd_loadtest_scale, database_url=None)
    lh = lsub.add_parser(
        "report",
        help="render report.html again from a report.json",
        description="Render the HTML page of a load-test report from its JSON (after "
        "editing it, or with a newer harness).",
    )
    lh.add_argument("report", help="a report.json written by run or scale")
    lh.add_argument("--html", help="where to write (default: beside the JSON, .html)")
    lh.set_defaults(func=_cmd_loadtest_report)
    lq = lsub.add_parser(
        "plan",
        help="hardware for R registrations at Q lookups/s",
        description="A capacity plan from measured figures. Cache sizes follow from Zipfian "
        "popularity: the L1 hit ratio from how many entries fit a worker's L1, the Redis "
        "memory from how many of the hottest identifiers answer --cache-hit-ratio of lookups. "
        "Defaults are this project's measurements on its 2-core reference machine.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    from idnode.loadtest.plan import Plan

    d = Plan(registrations=1.5e9, qps=1)
    lq.add_argument("--registrations", type=float, default=1.5e9)
    lq.add_argument("--qps", type=float, required=True, help="lookups per second to serve")
    for name, help_text in (
        ("bytes_per_identifier", "SQL bytes per identifier (idnode loadtest populate)"),
        ("cache_hit_ratio", "share of lookups L1 or Redis must answer (the rest reach SQL)"),
        ("zipf_theta", "Zipfian popularity constant (YCSB: 0.99)"),
        ("l1_mb_per_worker", "the node's --l1-max-mb"),
        ("l1_bytes_per_entry", "bytes an L1 entry takes"),
        ("hit_qps_per_core", "L1-hit lookups/s one core serves (idnode loadtest run)"),
        ("miss_qps_per_core", "lookups/s past L1 one core serves (idnode loadtest run)"),
        ("redis_bytes_per_key", "Redis bytes per cached identifier (reported by run)"),
        ("headroom", "spare capacity added to every figure"),
    ):
        lq.add_argument(
            "--" + name.replace("_", "-"), type=float, default=getattr(d, name), help=help_text
        )
    lq.add_argument("--json", action="store_true")
    lq.set_defaults(func=_cmd_loadtest)

    p = sub.add_parser(
        "audit",
        help="show the audit log of a handle",
        description="Every accepted and refused write of a handle, oldest first: when, the "
        "operation, the response code, who (INDEX:HANDLE of the key), and SHA-256 digests "
        "of the value list before and after.",
    )
    p.add_argument("handle")
    p.add_argument("--limit", type=int, default=100, help="newest N entries (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    _add_settings(p, ("database_url", "case_sensitive"))
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser(
        "import",
        help="bulk-load handles from a JSON Lines file",
        description='Load handles from a JSON Lines file, one {"handle": ..., "values": [...]} '
        "per line in the reference REST JSON shape, through the registry's batch path. Bad "
        "lines are reported with their line numbers and skipped; every good line is kept. A "
        "handle already registered with the same values is fine (re-running is safe); with "
        "other values it is rejected unless --replace. Exit status 1 if any line was rejected.",
    )
    p.add_argument("file", metavar="FILE.jsonl")
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="handles per statement (1 to 2000, default 1000)",
    )
    p.add_argument(
        "--replace",
        action="store_true",
        help="replace handles registered with other values (default: reject them)",
    )
    _add_settings(p, ("database_url", "case_sensitive", "secret_key_file"))
    p.set_defaults(func=_cmd_import)

    p = sub.add_parser(
        "resolve",
        help="resolve a handle against a Handle server",
        description="Resolve a handle over UDP (default), TCP or the HTTP tunnel and print "
        "the answer as JSON. Exit status 0 on success, 1 on any other response code, 2 when "
        "the server cannot be reached.",
    )
    p.add_argument("handle")
    p.add_argument("--server", help="HOST:PORT (default 127.0.0.1:2641, or :8000 with --http)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--udp", action="store_true", help="UDP (the default)")
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
    p.set_defaults(func=_cmd_resolve)

    p = sub.add_parser(
        "demo",
        help="load demo data into an embedded registry and serve it",
        description="Create sqlite:///idnode-demo.db (or --database-url), home 88.166, load "
        "three enterprises with a few identifiers each, then serve as `idnode serve` does.",
    )
    _add_settings(p)
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ConfigError as exc:
        print(f"idnode: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (StoreError, InvalidName) as exc:
        print(f"idnode {args.command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
