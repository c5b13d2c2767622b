"""Reverse lookup on a real `idnode serve --search-index`: pyhandle's ``search_handle``
(the EUDAT client, unmodified, its reverse-lookup settings pointing at the node) against
``/hrls/handles``; `idnode search-index build` for handles written before; refusals
(401 without credentials, 400 for an unbounded pattern or limit); 501 when off."""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pyhandle.clientcredentials import PIDClientCredentials
from pyhandle.handleclient import RESTHandleClient
from pyhandle.handleexceptions import ReverseLookupException

from tests.e2e.node_process import IDNODE, NodeProcess, Registry, init_registry

pytestmark = pytest.mark.e2e
SECRET = "S3cret-for-search"
ADMIN = "300:0.NA/88.166"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return init_registry(tmp_path_factory.mktemp("search"), "search", "--admin-secret", SECRET)


@pytest.fixture(scope="module")
def node(registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    n = NodeProcess(
        registry.url,
        log=tmp_path_factory.mktemp("log") / "node.log",
        extra=("--secret-key-file", registry.key, "--search-index"),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def client(node: NodeProcess, password: str = SECRET) -> Any:
    creds = PIDClientCredentials(
        client="rest",
        handle_server_url=node.http,
        username=ADMIN,
        password=SECRET,
        reverselookup_baseuri=node.http,
        reverselookup_username=ADMIN,
        reverselookup_password=password,
        HTTPS_verify=False,
    )
    return RESTHandleClient.instantiate_with_credentials(creds)


def get(node: NodeProcess, query: str, *, auth: bool = True) -> tuple[int, Any]:
    req = urllib.request.Request(f"{node.http}/hrls/handles?{query}")
    if auth:
        token = base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_pyhandle_search_handle_after_a_build(node: NodeProcess, registry: Registry) -> None:
    c = client(node)
    for i in range(3):
        c.register_handle(f"88.166/S-{i}", location=f"https://example.cn/s/{i}", checksum=f"c{i}")
    # Handles written before the index was built are not searched yet: 503 says so.
    status, body = get(node, "URL=https://example.cn/s/0")
    assert status == 503 and "search-index build" in body["error"]
    built = subprocess.run(
        [IDNODE, "search-index", "build", "--database-url", registry.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    assert "value index built" in built.stdout
    assert c.search_handle(URL="https://example.cn/s/1") == ["88.166/S-1"]
    assert c.search_handle(URL="https://example.cn/s/*") == [f"88.166/S-{i}" for i in range(3)]
    assert c.search_handle(URL="https://example.cn/s/*", CHECKSUM="c2") == ["88.166/S-2"]
    assert c.search_handle(URL="https://example.cn/s/*", prefix="99.1") == []
    # Writes keep the index in step from now on: a new handle, a changed and a deleted one.
    c.register_handle("88.166/S-9", location="https://example.cn/s/9")
    c.modify_handle_value("88.166/S-0", URL="https://example.cn/moved/0")
    c.delete_handle("88.166/S-1")
    assert c.search_handle(URL="https://example.cn/s/*") == ["88.166/S-2", "88.166/S-9"]
    assert c.search_handle(URL="https://example.cn/moved/0") == ["88.166/S-0"]
    # The servlet's retrieverecords: each handle with its values.
    status, records = get(node, "URL=https://example.cn/s/9&retrieverecords=true")
    assert status == 200 and list(records) == ["88.166/S-9"]
    first = records["88.166/S-9"][0]
    assert (first["index"], first["type"]) == (1, "URL")


def test_refusals_and_bounds(node: NodeProcess) -> None:
    status, body = get(node, "URL=https://example.cn/*", auth=False)
    assert status == 401 and "administrator" in body["error"]
    with pytest.raises(ReverseLookupException, match="Authentication failed"):
        client(node, password="wrong").search_handle(URL="https://example.cn/s/1")
    status, body = get(node, "URL=*example*")
    assert status == 400 and "must begin with literal text" in body["error"]
    status, body = get(node, "URL=*&limit=5000")
    assert status == 400 and "limit" in body["error"]
    status, page = get(node, "URL=*&limit=1")
    assert status == 200 and len(page) == 1
    status, body = get(node, "HS_SECKEY=x")
    assert status == 400


def test_a_node_without_search_index_says_how_to_turn_it_on(
    registry: Registry, tmp_path: Path
) -> None:
    # The registry keeps an index (built above): a node started without the flag keeps it
    # in step all the same, and says so (README, Search).
    n = NodeProcess(
        registry.url, log=tmp_path / "marked.log", extra=("--secret-key-file", registry.key)
    )
    n.wait_ready()
    try:
        status, _ = get(n, "URL=https://example.cn/s/2")
        assert status == 200
        assert "keeps a search index" in n.log_text()
    finally:
        assert n.stop() == 0, n.log_text()
    # Dropped: a node without the flag answers 501, saying how to turn it on.
    dropped = subprocess.run(
        [IDNODE, "search-index", "drop", "--database-url", registry.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert dropped.returncode == 0, dropped.stderr
    n = NodeProcess(
        registry.url, log=tmp_path / "off.log", extra=("--secret-key-file", registry.key)
    )
    n.wait_ready()
    try:
        status, body = get(n, "URL=https://example.cn/s/2")
        assert status == 501 and "--search-index" in body["error"]
    finally:
        assert n.stop() == 0, n.log_text()
