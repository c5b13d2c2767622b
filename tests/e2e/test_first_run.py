"""A first run as a new user makes it: every mistake ends in one line saying what to do
(exit status 2), never a traceback, and nothing is left behind by a command that failed
or only reads."""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sqlite3
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography.fernet import Fernet

from idnode.loadtest.scratch_db import database_url
from idnode.registry.admin_tasks import check_before_serving
from idnode.registry.api_keys import digest
from idnode.registry.store import open_store
from idnode.resolver.grpc_protos import load
from tests.e2e.node_process import IDNODE, NodeProcess, admin_node, init_registry
from tests.services import free_port

pytestmark = pytest.mark.e2e


def idnode(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=180, check=False, cwd=cwd
    )


def one_line_error(p: subprocess.CompletedProcess[str], *words: str, code: int = 2) -> str:
    """The process failed with ``code`` and one line on stderr holding ``words``."""
    assert "Traceback" not in p.stderr, p.stderr
    lines = p.stderr.strip().splitlines()
    assert p.returncode == code and len(lines) == 1, (p.returncode, p.stderr)
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


# --- database URLs ---------------------------------------------------------------------


def test_init_against_a_postgresql_database_that_does_not_exist_says_how_to_create_it(
    pg_server: tuple[str, str], tmp_path: Path
) -> None:
    name = f"idnode_missing_{secrets.token_hex(4)}"
    url = database_url(pg_server[0], name)
    for args in (
        ("init", "--prefix", "88.166", "--database-url", url),
        ("loadtest", "populate", "--count", "10", "--database-url", url),
    ):
        one_line_error(idnode(*args, cwd=tmp_path), "does not exist", f"createdb {name}")


def test_a_refused_port_an_unknown_scheme_and_a_bare_file_name(tmp_path: Path) -> None:
    refused = f"postgresql://postgres@127.0.0.1:{free_port()}/idnode"
    one_line_error(
        idnode("init", "--prefix", "88.166", "--database-url", refused, cwd=tmp_path),
        "cannot set up the registry",
    )
    for url, hint in (("mysql://db/idnode", "unsupported"), ("idnode.db", "sqlite:///idnode.db")):
        for args in (("init", "--prefix", "88.166"), ("serve",), ("audit", "88.166/x")):
            one_line_error(idnode(*args, "--database-url", url, cwd=tmp_path), hint)
    assert list(tmp_path.iterdir()) == []  # no key file, no database file


# --- files ---------------------------------------------------------------------------


def test_missing_import_and_key_files(tmp_path: Path) -> None:
    one_line_error(idnode("import", "nothing.jsonl", cwd=tmp_path), "nothing.jsonl", "no such")
    for flag in ("--admin-pubkey", "--server-key-file"):
        one_line_error(
            idnode("init", "--prefix", "88.166", flag, "missing.pem", cwd=tmp_path),
            "cannot read missing.pem",
        )
    assert list(tmp_path.iterdir()) == []  # checked before anything was made


def test_inspect_a_path_that_does_not_exist(tmp_path: Path) -> None:
    p = idnode("inspect", str(tmp_path / "no" / "such" / "file"))
    one_line_error(p, "no such file")
    assert p.stdout == ""


# --- names ---------------------------------------------------------------------------


def test_init_refuses_a_prefix_with_spaces(tmp_path: Path) -> None:
    one_line_error(idnode("init", "--prefix", "not a prefix", cwd=tmp_path), "'not a prefix'")
    assert list(tmp_path.iterdir()) == []


def test_resolve_a_suffix_without_its_prefix_is_refused_before_asking_a_server() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        p = idnode("resolve", "HV-0001", "--server", f"127.0.0.1:{port}", "--timeout", "1")
        one_line_error(p, "prefix/suffix", "88.166.1001/HV-0001")
        server.setblocking(False)
        with pytest.raises(BlockingIOError):
            server.recv(65535)  # nothing was sent


def test_an_import_line_without_values_is_refused_with_its_number(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "imp")
    f = tmp_path / "h.jsonl"
    f.write_text(
        json.dumps({"handle": "88.166/GOOD", "values": [{"index": 1, "type": "URL", "data": "x"}]})
        + "\n"
        + json.dumps({"handle": "88.166/EMPTY", "values": []})
        + "\n"
        + json.dumps({"handle": "88.166/NONE"})
        + "\n"
    )
    p = idnode("import", str(f), "--database-url", db, "--secret-key-file", key)
    assert p.returncode == 1, p.stderr
    assert f'{f}:2: rejected: 88.166/EMPTY: no "values"' in p.stderr
    assert f'{f}:3: rejected: 88.166/NONE: no "values"' in p.stderr
    assert "imported 1 handles" in p.stdout

    async def stored() -> set[str]:
        s = open_store(db)
        await s.open()
        try:
            return set(await s.get_many(["88.166/GOOD", "88.166/EMPTY", "88.166/NONE"]))
        finally:
            await s.close()

    assert asyncio.run(stored()) == {"88.166/GOOD"}


# --- API keys ------------------------------------------------------------------------


def test_api_keys_for_real_admins_only_and_they_can_be_listed_and_revoked(
    tmp_path: Path,
) -> None:
    db, _, _ = init_registry(tmp_path, "keys", "--admin-secret", "s")
    one_line_error(
        idnode("apikey", "create", "--admin", "300:0.NA/88.999", "--database-url", db),
        "no admin 300:0.NA/88.999",
    )
    one_line_error(  # the handle exists, but holds no key at that index
        idnode("apikey", "create", "--admin", "301:0.NA/88.166", "--database-url", db),
        "no HS_SECKEY or HS_PUBKEY at index 301",
    )
    made = idnode(
        "apikey", "create", "--admin", "300:0.NA/88.166", "--label", "ci", "--database-url", db
    )
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    listed = idnode("apikey", "list", "--database-url", db)
    assert listed.returncode == 0, listed.stderr
    (line,) = listed.stdout.splitlines()
    key_id, admin, _when, label = line.split("\t")
    assert digest(key).startswith(key_id) and admin == "300:0.NA/88.166" and label == "ci"
    assert key not in listed.stdout
    one_line_error(idnode("apikey", "revoke", "0123456789", "--database-url", db), "no API key")
    gone = idnode("apikey", "revoke", key_id, "--database-url", db)
    assert gone.returncode == 0 and key_id in gone.stdout, gone.stderr
    assert idnode("apikey", "list", "--database-url", db).stdout == ""

    async def still_valid() -> object:
        s = open_store(db)
        await s.open()
        try:
            return await s.api_key(digest(key))
        finally:
            await s.close()

    assert asyncio.run(still_valid()) is None


# --- the node key ----------------------------------------------------------------------


def test_serving_with_another_node_key_stops_at_start_naming_the_file(tmp_path: Path) -> None:
    db, _, _ = init_registry(tmp_path, "nk", "--admin-secret", "s")
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    ports = [str(free_port()) for _ in range(3)]
    p = subprocess.run(
        [IDNODE, "serve", "--database-url", db, "--secret-key-file", str(other),
         "--handle-port", ports[0], "--http-port", ports[1], "--grpc-port", ports[2]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    one_line_error(p, f"the node key {other} is not the key")


def test_a_registry_without_a_check_value_gets_one_at_first_start(tmp_path: Path) -> None:
    db, key, _ = init_registry(tmp_path, "old")
    path = db.removeprefix("sqlite:///")
    with sqlite3.connect(path) as c:  # as a registry made before the check value was
        c.execute("DELETE FROM node_key_check")
    other = tmp_path / "other.key"
    other.write_bytes(Fernet.generate_key())
    # The wrong key cannot open the server key sealed there: it stores nothing.
    with pytest.raises(Exception, match="is not the key"):
        asyncio.run(check_before_serving(db, str(other)))
    assert asyncio.run(check_before_serving(db, key)) == "stored"
    assert asyncio.run(check_before_serving(db, key)) == "checked"
    with pytest.raises(Exception, match="is not the key"):
        asyncio.run(check_before_serving(db, str(other)))


# --- defaults beside the demo ----------------------------------------------------------


def test_commands_beside_the_demo_use_its_registry_and_readers_make_no_files(
    tmp_path: Path,
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    for args in (("audit", "88.166/x"), ("template", "list", "88.166"), ("apikey", "list")):
        one_line_error(idnode(*args, cwd=empty), "no registry at idnode.db", "idnode init")
    assert list(empty.iterdir()) == []
    beside = tmp_path / "beside"
    beside.mkdir()
    made = idnode(
        "init", "--prefix", "88.166", "--admin-secret", "s",
        "--database-url", "sqlite:///idnode-demo.db", cwd=beside,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    commands: list[tuple[str, ...]] = [
        ("audit", "0.NA/88.166"),
        ("template", "list", "88.166"),
        ("apikey", "create", "--admin", "300:0.NA/88.166"),
        ("apikey", "list"),
    ]
    for command in commands:
        p = idnode(*command, cwd=beside)
        assert p.returncode == 0, (command, p.stderr)
    assert not (beside / "idnode.db").exists()


# --- load test, pipes, the HTTP tunnel -------------------------------------------------


def test_populating_an_sqlite_slice_again_is_one_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/lt.db"
    first = idnode("loadtest", "populate", "--count", "50", "--database-url", url)
    assert first.returncode == 0, first.stderr
    again = idnode("loadtest", "populate", "--count", "50", "--database-url", url)
    one_line_error(again, "overlaps identifiers already loaded", "--start", code=3)


@pytest.fixture
def handle_tcp_port() -> Iterator[int]:
    """A port that answers as a Handle TCP door does: a Handle message, not HTTP."""
    server = socket.create_server(("127.0.0.1", 0))
    answer = bytes.fromhex("0201000000000000000000090000002c") + bytes(44)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(answer)

    threading.Thread(target=serve, daemon=True).start()
    yield server.getsockname()[1]
    server.close()


def test_resolve_over_http_against_a_handle_port(handle_tcp_port: int) -> None:
    p = idnode("resolve", "--http", "--server", f"127.0.0.1:{handle_tcp_port}", "88.166/x")
    one_line_error(p, "does not answer HTTP", "--http-port")


def test_a_closed_pipe_is_no_traceback() -> None:
    proc = subprocess.Popen(
        [IDNODE, "loadtest", "plan", "--qps", "1000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as `| head` does once it has read enough
    err = proc.stderr.read().decode()
    assert proc.wait(60) == 141 and "Traceback" not in err and err == "", err


@pytest.fixture
def keyed_node(tmp_path: Path, redis_url: str, redis_namespace: str) -> Iterator[NodeProcess]:
    yield from admin_node(tmp_path, "rk", "s", redis_url, redis_namespace)


def test_a_revoked_api_key_stops_working_within_ten_seconds(keyed_node: NodeProcess) -> None:
    """On the REST API and on gRPC, both of which trust a key's check for 10 s."""
    db = keyed_node.database_url
    made = idnode("apikey", "create", "--admin", "300:0.NA/88.166", "--database-url", db)
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    pb2, pb2_grpc = load()
    channel = grpc.insecure_channel(f"127.0.0.1:{keyed_node.grpc_port}")
    registry = pb2_grpc.RegistryStub(channel)
    n = iter(range(1000))

    def rest_put() -> int:
        req = urllib.request.Request(
            f"{keyed_node.http}/api/handles/88.166/REST-{next(n)}",
            data=json.dumps([{"index": 1, "type": "URL", "data": "https://x"}]).encode(),
            method="PUT",
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return int(r.status)
        except urllib.error.HTTPError as e:
            return int(e.code)

    def grpc_create() -> grpc.StatusCode:
        record = pb2.HandleRecord(
            handle=f"88.166/GRPC-{next(n)}",
            values=[pb2.HandleValue(index=1, type="URL", data=b"https://x")],
        )
        try:
            registry.CreateHandle(
                pb2.CreateHandleRequest(record=record),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=10,
            )
        except grpc.RpcError as err:
            return err.code()
        return grpc.StatusCode.OK

    try:
        assert rest_put() == 201 and grpc_create() == grpc.StatusCode.OK
        assert idnode("apikey", "revoke", key, "--database-url", db).returncode == 0
        deadline = time.monotonic() + 15
        while (rest_put(), grpc_create()) != (401, grpc.StatusCode.UNAUTHENTICATED):
            assert time.monotonic() < deadline, "the revoked key still works"
            time.sleep(0.5)
    finally:
        channel.close()
