"""The operator's tasks on a registry, as the command line runs them: make or upgrade one
(schema, node key, server key, homed prefixes, their administrators), load the demo,
publish and read templates.

Each task opens the store itself (``open_registry``) and raises a RegistryError
subclass whose message says what to do; the command line only maps flags onto these
calls and prints what they return.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idnode.errors import RegistryError

from .bootstrap import create_prefix_admin
from .names import PrefixAuthority, check_prefix
from .node_key import check_node_key
from .sealing import Sealer
from .server_key import ServerKey, ServerKeyError, ensure_server_key
from .store import Store, StoreError, open_store, redact_url
from .templates import Template
from .value_search import marked_on, switch_on


class TaskError(RegistryError, ValueError):
    """A task cannot run as asked; the message says what to do instead."""


def sqlite_file(url: str) -> Path | None:
    return Path(url[len("sqlite:///") :]) if url.startswith("sqlite:///") else None


def check_url(url: str) -> None:
    """Refuse what no store opens, before anything touches it (a bare file name too)."""
    if url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return
    hint = f"; for a file, sqlite:///{url}" if "://" not in url else ""
    raise TaskError(
        f"unsupported database URL {url!r}: use sqlite:///PATH or postgresql://USER@HOST/DB{hint}"
    )


def missing_database(url: str, exc: BaseException) -> TaskError | None:
    """A clear error when ``exc`` says the PostgreSQL database does not exist."""
    if "does not exist" not in str(exc) or not url.startswith(("postgresql://", "postgres://")):
        return None
    name = url.rsplit("/", 1)[-1].split("?", 1)[0]
    server = url.rsplit("/", 1)[0]
    return TaskError(
        f"the database {name!r} does not exist on {redact_url(server)}: create it first "
        f"(createdb {name}, or psql -c 'CREATE DATABASE \"{name}\"' as a role that may)"
    )


@asynccontextmanager
async def open_registry(url: str, case_sensitive: bool = False) -> AsyncIterator[Store]:
    """An existing registry's store, opened; never creates a database (an SQLite file that
    is not there is an error, not an empty file left behind)."""
    check_url(url)
    path = sqlite_file(url)
    if path is not None and not path.exists():
        raise TaskError(
            f"no registry at {path}: make one with `idnode init --prefix PREFIX` (or run "
            "`idnode demo` here), or give --database-url"
        )
    store = open_store(url, case_sensitive)
    try:
        await store.open()
    except StoreError as exc:
        raise missing_database(url, exc) or exc from None
    try:
        # The registry says whether its value index is kept: a CLI writer (import,
        # templates, ...) keeps it in step as a node with --search-index does.
        if await marked_on(store):
            switch_on(store)
        yield store
    finally:
        await store.close()


def upgrade_schema(url: str) -> None:
    """Create or upgrade the schema (Alembic); a database that is not there is a one-line
    error saying how to create it."""
    from .migrate import upgrade

    check_url(url)
    try:
        upgrade(url)
    except Exception as exc:  # asyncpg and SQLAlchemy errors of every kind end here
        raise missing_database(url, exc) or StoreError(
            f"cannot set up the registry at {redact_url(url)}: {exc}"
        ) from None


@dataclass(frozen=True)
class ServerKeyChoice:
    """What `idnode init` does about the server key pair."""

    algorithm: str = "rsa"
    import_file: str | None = None
    passphrase: str | None = None
    rotate: bool = False

    def imported(self) -> ServerKey | None:
        if not self.import_file:
            return None
        try:
            data = Path(self.import_file).read_bytes()
            passphrase = self.passphrase.encode() if self.passphrase else None
            return ServerKey.from_file(data, passphrase)
        except OSError as exc:
            raise TaskError(f"cannot read {self.import_file}: {exc.strerror}") from None
        except ServerKeyError as exc:
            raise TaskError(f"cannot use {self.import_file}: {exc}") from None


@dataclass(frozen=True)
class AdminKey:
    """The prefix administrators' key: a secret, or a public key file (PEM or admpub.bin)."""

    secret: str | None = None
    pubkey_file: str | None = None

    def pubkey(self) -> bytes | None:
        if self.pubkey_file is None:
            return None
        try:
            return Path(self.pubkey_file).read_bytes()
        except OSError as exc:
            raise TaskError(f"cannot read {self.pubkey_file}: {exc.strerror}") from None


@dataclass
class InitReport:
    server_key: str  # e.g. "RSA-2048 (created)"
    homed: list[str]
    admins: list[str] = field(default_factory=list)


async def init_registry(
    url: str,
    prefixes: list[str],
    *,
    owner: str = "",
    key_file: str,
    case_sensitive: bool = False,
    admin: AdminKey | None = None,
    server_key: ServerKeyChoice | None = None,
) -> InitReport:
    """Make or upgrade a registry: schema, node key (created when missing) and its check
    value, server key, homed prefixes and, given a key, their administrators. Everything
    it is given is checked before anything is written."""
    for p in prefixes:
        check_prefix(p)
    admin = admin or AdminKey()
    choice = server_key or ServerKeyChoice()
    imported = choice.imported()
    pubkey = admin.pubkey()
    # Alembic runs its own event loop (asyncpg); it must not run inside ours.
    await asyncio.get_running_loop().run_in_executor(None, upgrade_schema, url)
    sealer = Sealer.from_file(key_file, create=True)
    async with open_registry(url, case_sensitive) as store:
        await check_node_key(store, sealer, key_file)
        try:
            key, done = await ensure_server_key(
                store, sealer, algorithm=choice.algorithm, imported=imported, rotate=choice.rotate
            )
        except ServerKeyError as exc:
            raise TaskError(str(exc)) from None
        report = InitReport(f"{key.algorithm}-{key.private.key_size} ({done})", [])
        for p in prefixes:
            await store.home_prefix(p, owner)
            if admin.secret is not None or pubkey is not None:
                report.admins.append(
                    await create_prefix_admin(
                        store,
                        p,
                        sealer=sealer,
                        secret=admin.secret.encode() if admin.secret is not None else None,
                        pubkey_pem=pubkey,
                    )
                )
        report.homed = sorted(await store.homed_prefixes())
    return report


async def check_before_serving(url: str, key_file: str, case_sensitive: bool = False) -> str:
    """Before a node serves: the registry is there (never made empty by the start), and
    the node key file, when there is one, opens its check value (stored now if a registry
    made before the check value has none). What was found, for the log."""
    async with open_registry(url, case_sensitive) as store:
        if not Path(key_file).exists():
            return "no node key"  # the node serves without writes, and warns so
        return await check_node_key(store, Sealer.from_file(key_file), key_file)


# --- the node in the hierarchy ---------------------------------------------------------


async def grant_prefix(
    url: str,
    prefix: str,
    *,
    key_file: str,
    admin: AdminKey,
    case_sensitive: bool = False,
) -> str:
    """On a node that homes a parent prefix (a top-level node homing 88): write the
    administrator of the derived prefix ``0.NA/<prefix>`` (88.166) with the node that will
    serve it's key, without homing it here. That admin may then write its node's HS_SITE
    into ``0.NA/<prefix>`` (``idnode register-upward``) and create ``0.NA/<prefix>.*``;
    nothing else here (registry/permissions.py). The admin, INDEX:HANDLE."""
    check_prefix(prefix)
    pubkey = admin.pubkey()
    if admin.secret is None and pubkey is None:
        raise TaskError("give the delegate's key: --admin-secret or --admin-pubkey")
    async with open_registry(url, case_sensitive) as store:
        authority = PrefixAuthority(await store.homed_prefixes(), case_sensitive)
        if prefix.upper() in {p.upper() for p in authority.homed}:
            raise TaskError(f"{prefix} is homed on this node; grant a prefix another node serves")
        if not authority.is_homed(prefix):
            homed = ", ".join(sorted(authority.homed)) or "none"
            raise TaskError(f"{prefix} is not under a prefix this node homes ({homed})")
        sealer = Sealer.from_file(key_file) if admin.secret is not None else None
        if sealer is not None:
            await check_node_key(store, sealer, key_file)
        return await create_prefix_admin(
            store,
            prefix,
            sealer=sealer,
            secret=admin.secret.encode() if admin.secret is not None else None,
            pubkey_pem=pubkey,
        )


async def node_site_parts(url: str, case_sensitive: bool = False) -> tuple[list[str], bytes]:
    """What this node's HS_SITE is made of that the registry holds: its homed prefixes
    and the server key's public part (empty without one)."""
    async with open_registry(url, case_sensitive) as store:
        homed = sorted(await store.homed_prefixes())
        try:
            row = await store.server_key()
        except StoreError:
            row = None
    return homed, (row[2] if row is not None else b"")


# --- templates ------------------------------------------------------------------------


async def template_versions(store: Store, prefix: str) -> dict[str, Template]:
    """A prefix's template versions, oldest first, as stored."""
    return {v: Template.from_json(doc) for v, doc in await store.templates(prefix)}


def read_template_file(path: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise TaskError(f"{path} is not JSON: {exc}") from None


async def publish_template(store: Store, document: Any) -> tuple[int, str]:
    """Publish a template version as the operator (audited as the importer), through the
    registry service (its checks and audit row); the response code and message."""
    from .importer import IMPORTER
    from .service import RegistryService

    svc = RegistryService(
        store,
        PrefixAuthority(await store.homed_prefixes(), store.case_sensitive),
        server_admins=[IMPORTER],
    )
    r = await svc.put_template(document, IMPORTER)
    return int(r.code), r.message


# --- the demo -------------------------------------------------------------------------


@dataclass
class DemoReport:
    init: InitReport
    handles: int
    template: str
    admin: str
    secret: str


async def load_demo(
    url: str, *, key_file: str, secret: str, case_sensitive: bool = False
) -> DemoReport:
    """A sandbox: the node's prefix homed, its administrator with ``secret``, three
    enterprises (each prefix administered by its own admin and by the node's) with a few
    identifiers, and the template they name."""
    from .demo import NODE_PREFIX, TEMPLATE, demo_records
    from .store import now
    from .templates import parse_template

    init = await init_registry(
        url,
        [NODE_PREFIX],
        owner="demo",
        key_file=key_file,
        case_sensitive=case_sensitive,
        admin=AdminKey(secret=secret),
    )
    template = parse_template(TEMPLATE)
    async with open_registry(url, case_sensitive) as store:
        n = await store.put_many(demo_records(now()))
        await store.put_template(NODE_PREFIX, template.version, template.to_json(), "demo")
    return DemoReport(init, n, template.version, init.admins[0], secret)
