"""Imports point one way (ARCHITECTURE.md): front doors -> core -> cache/registry -> codec.

Every module of the package is placed in a layer below; a module may import only from its
own layer or the layers beneath it, plus the extra rules at the end (the codec is a pure
library; the product reaches the load-test harness through one entry point; front doors
touch neither SQL nor Redis). A new module must be placed here, so its arrows are checked.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FOLDERS = {
    "resolver": "idnode.resolver",
    "registry": "idnode.registry",
    "loadtest": "idnode.loadtest",
}

# Lowest first. Patterns are fnmatch patterns over module names; the first match wins.
LAYERS: list[tuple[str, list[str]]] = [
    ("errors", ["idnode.errors"]),
    ("codec", ["idnode.resolver.codec", "idnode.resolver.codec.*"]),
    ("generated", ["idnode.v1", "idnode.v1.*", "idnode.protos", "idnode.protos.*"]),
    ("registry", ["idnode.registry", "idnode.registry.*"]),
    (
        "core",
        [
            "idnode.resolver",
            "idnode.resolver.settings",
            "idnode.resolver.logs",
            "idnode.resolver.metrics",
            "idnode.resolver.gc_pauses",
            "idnode.resolver.loop_stalls",
            "idnode.resolver.ratelimit",
            "idnode.resolver.connlimits",
            "idnode.resolver.grpc_protos",
            "idnode.resolver.client",
            "idnode.resolver.health",
            "idnode.resolver.dissect",
            "idnode.resolver.core",
            "idnode.resolver.stages",
            "idnode.resolver.stages.*",
            "idnode.resolver.l1",
            "idnode.resolver.l2",
            "idnode.resolver.lean_redis",  # L2's connection for the miss path's reads and fills
            "idnode.resolver.coalesce",
            "idnode.resolver.changefeed",
            "idnode.resolver.invalidation_batches",
            # Upstream resolution (the client side of the hierarchy): it uses the codec
            # and the client, and the node's stages may call it, so it sits in the core.
            "idnode.resolver.upstream",
            "idnode.resolver.upstream.*",
        ],
    ),
    (
        "doors",
        [
            "idnode.resolver.handle_*",
            "idnode.resolver.ready_answers",  # the Handle doors' kept answers
            "idnode.resolver.*_door",
            "idnode.resolver.udp_batch_io",  # the UDP door's batched socket I/O
            "idnode.resolver.dns_answers",  # the DNS door's rendering (dnspython)
            "idnode.resolver.dns_fast",  # the DNS door's fast path (wire bytes)
            "idnode.resolver.web",  # the web pages (a door: core and registry service)
            "idnode.resolver.web.*",
        ],
    ),
    ("node", ["idnode.resolver.node", "idnode.resolver.supervisor", "idnode.resolver.listeners"]),
    ("cli", ["idnode.resolver.cli", "idnode.resolver.cli.*"]),
    ("loadtest", ["idnode.loadtest", "idnode.loadtest.*"]),
]
RANK = {name: i for i, (name, _) in enumerate(LAYERS)}

# The load-test harness sits beside the product, not above all of it: it may use the
# codec, the registry and the core (client, gRPC code), never a front door or the node.
LOADTEST_MAY_IMPORT = {"errors", "codec", "generated", "registry", "core", "loadtest"}
# Front doors translate: no SQL, no Redis of their own.
DOOR_FORBIDDEN = {"sqlalchemy", "asyncpg", "aiosqlite", "sqlite3", "redis"}
# ... nor the modules that hold them: doors ask the core and the registry service.
DOOR_FORBIDDEN_MODULES = (
    "idnode.registry.store",
    "idnode.registry.sqlite_store",
    "idnode.registry.postgres_store",
    "idnode.resolver.l2",
    "idnode.resolver.lean_redis",
    "idnode.resolver.stages",
    "idnode.resolver.coalesce",
)
CODEC_FORBIDDEN = {"asyncio", "socket", "selectors", "threading", "uvloop"}


def layer_of(module: str) -> str | None:
    for name, patterns in LAYERS:
        if any(fnmatch(module, p) for p in patterns):
            return name
    return None


def modules() -> Iterator[tuple[str, Path]]:
    yield "idnode.errors", REPO / "idnode" / "errors.py"
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            rel = path.relative_to(REPO / folder)
            if "migrations" in rel.parts:
                continue  # Alembic's scripts, loaded by path
            parts = list(rel.with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join([package, *parts]), path


def imports(module: str, path: Path) -> Iterator[str]:
    """Each imported name, fully qualified (``from a.b import c`` gives ``a.b.c``)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield from (f"{target}.{a.name}" for a in node.names)


def own_layer(name: str) -> str | None:
    """The layer of an imported idnode name (a module, or a name inside one)."""
    while name:
        found = layer_of(name)
        if found is not None:
            return found
        name = name.rpartition(".")[0]
    return None


def offenses(module: str, path: Path) -> list[str]:
    mine = layer_of(module)
    if mine is None:
        return []
    found = []
    for name in imports(module, path):
        top = name.split(".")[0]
        if top != "idnode":
            if mine == "codec" and (top in CODEC_FORBIDDEN or top not in sys.stdlib_module_names):
                found.append(f"{module} imports {name} (the codec is stdlib only)")
            if mine == "doors" and top in DOOR_FORBIDDEN:
                found.append(f"{module} imports {name} (front doors only translate)")
            continue
        if mine == "doors" and name.startswith(DOOR_FORBIDDEN_MODULES):
            found.append(f"{module} imports {name} (front doors only translate)")
        theirs = own_layer(name)
        if theirs is None:
            found.append(f"{module} imports {name}, which is in no layer")
        elif mine == "loadtest":
            if theirs not in LOADTEST_MAY_IMPORT:
                found.append(f"{module} (load test) imports {name} ({theirs})")
        elif theirs == "loadtest":
            # The product reaches the harness through one entry point, from the CLI.
            if not (mine == "cli" and name.startswith("idnode.loadtest.cli")):
                found.append(f"{module} imports {name} (the load-test harness)")
        elif RANK[theirs] > RANK[mine]:
            found.append(f"{module} ({mine}) imports {name} ({theirs}): upward")
    return found


def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = [m for m, _ in modules() if layer_of(m) is None]
    assert unplaced == [], "place these modules in a layer of tests/unit/test_layering.py"


def test_imports_point_down() -> None:
    assert [o for m, path in modules() for o in offenses(m, path)] == []


def test_the_rules_catch_what_they_claim(tmp_path: Path) -> None:
    """A check that cannot fail is none: each rule flags a module that breaks it."""
    door = tmp_path / "rest_door.py"
    door.write_text(
        "import redis\nfrom idnode.resolver.node import Node\nfrom idnode.loadtest.run import x\n"
        "from idnode.registry.store import Store\n"
    )
    assert len(offenses("idnode.resolver.rest_door", door)) == 4
    codec = tmp_path / "codec.py"
    codec.write_text(
        "import asyncio\nfrom idnode.registry.store import Store\nimport idnode.errors\n"
    )
    assert len(offenses("idnode.resolver.codec.values", codec)) == 2
    cli = tmp_path / "cli.py"
    cli.write_text("from idnode.loadtest.cli import main\nfrom idnode.loadtest.run import run\n")
    assert offenses("idnode.resolver.cli.loadtest", cli) == [
        "idnode.resolver.cli.loadtest imports idnode.loadtest.run.run (the load-test harness)"
    ]


def test_the_architecture_document_names_every_module() -> None:
    """ARCHITECTURE.md's module map has a line for each module (so it cannot drift)."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    missing = [
        str(path.relative_to(REPO))
        for _, path in modules()
        if path.name != "__init__.py" and path.name not in text
    ]
    assert missing == [], "add these to the module map in ARCHITECTURE.md"
