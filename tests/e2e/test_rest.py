"""The Handle.Net-compatible REST API, driven by pyhandle (the EUDAT client, unmodified)
and by plain HTTP for the bad-input cases; a real `idnode serve` process."""

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
from pyhandle.handleclient import RESTHandleClient
from pyhandle.handleexceptions import HandleAlreadyExistsException, HandleAuthenticationError

from tests.e2e.node_process import IDNODE, NodeProcess, admin_node

pytestmark = pytest.mark.e2e
SECRET = "S3cret-for-rest"
ADMIN = "300:0.NA/88.166"


@pytest.fixture
def node(tmp_path: Path, redis_url: str, redis_namespace: str) -> Iterator[NodeProcess]:
    yield from admin_node(tmp_path, "rest", SECRET, redis_url, redis_namespace)


def client(node: NodeProcess, password: str = SECRET) -> Any:
    return RESTHandleClient.instantiate_with_username_and_password(
        node.http, ADMIN, password, HTTPS_verify=False
    )


def test_pyhandle_registers_reads_modifies_and_deletes(node: NodeProcess) -> None:
    c = client(node)
    h = "88.166/PY-1"
    assert c.register_handle(h, location="https://example.cn/a") == h
    assert c.get_value_from_handle(h, "URL") == "https://example.cn/a"
    with pytest.raises(HandleAlreadyExistsException):
        c.register_handle(h, location="https://example.cn/other")
    c.modify_handle_value(h, URL="https://example.cn/b", EMAIL="qa@example.cn")
    assert c.get_value_from_handle(h, "URL") == "https://example.cn/b"
    assert c.get_value_from_handle(h, "EMAIL") == "qa@example.cn"
    c.delete_handle_value(h, "EMAIL")
    assert c.get_value_from_handle(h, "EMAIL") is None
    record = c.retrieve_handle_record(h)
    assert record["URL"] == "https://example.cn/b" and "HS_ADMIN" in record
    c.delete_handle(h)
    assert c.retrieve_handle_record_json(h) is None


def test_pyhandle_with_a_wrong_password_cannot_write(node: NodeProcess) -> None:
    c = client(node, password="wrong")
    with pytest.raises(HandleAuthenticationError):
        c.register_handle("88.166/PY-2", location="https://example.cn/a")
    assert client(node).retrieve_handle_record_json("88.166/PY-2") is None


def http(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(node.http + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def auth(password: str = SECRET) -> dict[str, str]:
    token = base64.b64encode(f"300%3A0.NA/88.166:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def test_reference_json_and_status_mapping(node: NodeProcess) -> None:
    body = json.dumps(
        {
            "values": [
                {"index": 1, "type": "URL", "data": {"format": "string", "value": "https://x"}},
                {"index": 2, "type": "SECRET", "data": "s", "permissions": "1100"},
            ]
        }
    ).encode()
    assert http(node, "PUT", "/api/handles/88.166/R-1", body, auth()) == (
        201,
        {"responseCode": 1, "handle": "88.166/R-1"},
    )
    status, j = http(node, "GET", "/api/handles/88.166/R-1")
    assert status == 200 and j["responseCode"] == 1 and j["handle"] == "88.166/R-1"
    assert [v["index"] for v in j["values"]] == [1]  # not public: withheld
    assert j["values"][0]["data"] == {"format": "string", "value": "https://x"}
    _, j = http(node, "GET", "/api/handles/88.166/R-1", headers=auth())
    assert [v["index"] for v in j["values"]] == [1, 2]  # an authorised admin sees it
    _, j = http(node, "GET", "/api/handles/88.166/R-1?type=EMAIL")
    assert j["responseCode"] == 200 and j["values"] == []
    assert http(node, "GET", "/api/handles/88.166/none")[0] == 404
    assert http(node, "GET", "/api/handles/99.9/x") == (
        400,
        {
            "responseCode": 301,
            "handle": "99.9/x",
            "message": "That naming authority doesn't live here",
        },
    )
    assert http(node, "PUT", "/api/handles/88.166/R-1", body, auth())[1]["responseCode"] == 101
    assert http(node, "PUT", "/api/handles/88.166/R-1", body, auth())[0] == 409
    status, j = http(node, "GET", "/api/handles?prefix=88.166&pageSize=10", headers=auth())
    assert status == 200 and j["handles"] == ["88.166/R-1"] and j["totalCount"] == "1"
    assert http(node, "GET", "/api/prefixes")[1]["prefixes"] == ["88.166"]
    assert http(node, "DELETE", "/api/handles/88.166/R-1?index=2", headers=auth())[0] == 200
    assert http(node, "DELETE", "/api/handles/88.166/R-1", headers=auth())[0] == 200
    assert http(node, "DELETE", "/api/handles/88.166/R-1", headers=auth())[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status"),
    [
        ("PUT", "/api/handles/88.166/B-1", b"{not json", "auth", 400),
        (
            "PUT",
            "/api/handles/88.166/B-1",
            b'{"values": [{"index": 1, "type": "URL", "x": 1}]}',
            "auth",
            400,
        ),
        (
            "PUT",
            "/api/handles/88.166/B-1",
            b'{"values": [{"index": 0, "type": "URL"}]}',
            "auth",
            400,
        ),
        ("PUT", "/api/handles/88.166/B-1", b"[]", "auth-text", 415),
        ("PUT", "/api/handles/88.166/B-1", b"[]", {"Content-Type": "application/json"}, 401),
        ("PUT", "/api/handles/88.166/B-1", b"[]", "badauth", 401),
        ("PUT", "/api/handles/88.166/B-1", b"[]", {"Authorization": "Basic !!!"}, 401),
        ("GET", "/api/handles/88.166%2Fx", None, None, 400),
        ("GET", "/api/handles/88.166/../etc", None, None, 400),
        ("GET", "/api/handles/88.166/", None, None, 400),
        ("GET", "/api/handles/88.166/x?index=one", None, None, 400),
        ("GET", "/api/handles?prefix=88.166&pageSize=0", None, "auth", 400),
        ("GET", "/api/handles?prefix=88.166", None, None, 401),
        (
            "PUT",
            "/api/handles/88.166/B-1",
            b"[" + b'{"index": 1, "type": "A", "data": "x"},' * 60000 + b"{}]",
            "auth",
            413,
        ),
    ],
)
def test_bad_requests_get_a_4xx_with_a_json_body(
    node: NodeProcess, method: str, path: str, body: bytes | None, headers: Any, status: int
) -> None:
    named: dict[str, dict[str, str]] = {
        "auth": auth(),
        "badauth": auth("wrong"),
        "auth-text": {**auth(), "Content-Type": "text/plain"},
    }
    h: dict[str, str] | None = named[headers] if isinstance(headers, str) else headers
    got, j = http(node, method, path, body, h)
    assert got == status, j
    assert "responseCode" in j


def test_openapi_document(node: NodeProcess) -> None:
    with urllib.request.urlopen(node.http + "/openapi.json", timeout=5) as r:
        doc = json.loads(r.read())
    assert doc["openapi"].startswith("3.") and "/api/handles/{handle}" in doc["paths"]


def test_bearer_tokens_work_on_rest(node: NodeProcess) -> None:
    # an IDIS login token ...
    req = urllib.request.Request(
        node.http + "/identity/token",
        method="POST",
        data=json.dumps({"username": ADMIN, "password": SECRET}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        token = json.loads(r.read())["data"]["token"]
    body = json.dumps([{"index": 1, "type": "URL", "data": "https://bearer"}]).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    assert http(node, "PUT", "/api/handles/88.166/BEARER-1", body, headers)[0] == 201
    # ... and an API key
    p = subprocess.run(
        [IDNODE, "apikey", "create", "--admin", ADMIN, "--database-url", node.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    headers["Authorization"] = f"Bearer {p.stdout.strip()}"
    assert http(node, "PUT", "/api/handles/88.166/BEARER-2", body, headers)[0] == 201
    headers["Authorization"] = "Bearer nonsense"
    assert http(node, "PUT", "/api/handles/88.166/BEARER-3", body, headers)[0] == 401
