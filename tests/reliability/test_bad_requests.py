"""Hostile inputs that once got a 500, or an IDIS "-4 internal error", with a traceback in
the node's log (issue 12): each now gets a client error with a message saying what is
wrong, and the node logs nothing at ERROR for it. One real `idnode serve` for the module;
requests go over real sockets, some as raw bytes no well-behaved client library sends."""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import subprocess
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from idnode.loadtest.processes import clear_namespace
from idnode.resolver.grpc_protos import load
from tests.e2e.node_process import IDNODE, NodeProcess, admin_node

pytestmark = pytest.mark.e2e
pb2, pb2_grpc = load()
SECRET = "S3cret-for-bad-requests"
ADMIN = "300:0.NA/88.166"
DEEP = b"[" * 100_000 + b"]" * 100_000
BASIC = "Basic " + base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[NodeProcess]:
    namespace = f"idnode-test-bad-{secrets.token_hex(3)}"
    yield from admin_node(tmp_path_factory.mktemp("bad"), "bad", SECRET, redis_url, namespace)
    clear_namespace(redis_url, namespace)


class Answer:
    """What the node answered, and what it logged meanwhile."""

    def __init__(self, status: int, body: bytes, logged: str) -> None:
        self.status, self.body, self.logged = status, body, logged

    def json(self) -> Any:
        return json.loads(self.body)

    def assert_quiet_log(self) -> None:
        """No traceback and nothing at ERROR: a hostile request is the client's problem."""
        assert "Traceback" not in self.logged and " ERROR " not in self.logged, self.logged


def _log_size(node: NodeProcess) -> int:
    assert node.log_path is not None
    return node.log_path.stat().st_size


def _log_since(node: NodeProcess, offset: int) -> str:
    assert node.log_path is not None
    with node.log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode("utf-8", "replace")


def send(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str | bytes] | None = None,
) -> Answer:
    """One request with http.client, headers as given (bytes go out unencoded)."""
    start = _log_size(node)
    c = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=30)
    try:
        c.putrequest(method, path, skip_accept_encoding=True)
        for name, value in (headers or {}).items():
            c.putheader(name, value)
        if body is not None:
            c.putheader("Content-Length", str(len(body)))
        c.endheaders(body)
        r = c.getresponse()
        data = r.read()
    finally:
        c.close()
    # A handler logs before it answers, so what it logged is in the file by now.
    return Answer(r.status, data, _log_since(node, start))


def idis(node: NodeProcess, method: str, path: str, body: bytes, token: str = "") -> Answer:
    headers: dict[str, str | bytes] = dict(JSON)
    if token:
        headers["Authorization"] = f"Bearer {token}"
    a = send(node, method, path, body, headers)
    assert a.status == 200, a.body  # the facade answers 200 with an SNMS status, always
    return a


@pytest.fixture(scope="module")
def token(node: NodeProcess) -> str:
    login = json.dumps({"username": ADMIN, "password": SECRET}).encode()
    j = idis(node, "POST", "/identity/token", login).json()
    assert j["status"] == 1, j
    return str(j["data"]["token"])


def admin_value(index: int) -> list[dict[str, Any]]:
    admin = {"handle": "0.NA/88.166", "index": index, "permissions": "111111111111"}
    return [{"index": 100, "type": "HS_ADMIN", "data": {"format": "admin", "value": admin}}]


# --- the inputs named in the issue ------------------------------------------------------


@pytest.mark.parametrize("token_bytes", [b"\xe9\xe9", "é".encode(), b"idn_\xff"])
def test_a_non_ascii_bearer_header_is_a_401(node: NodeProcess, token_bytes: bytes) -> None:
    a = send(
        node, "GET", "/api/handles/88.166/x", headers={"Authorization": b"Bearer " + token_bytes}
    )
    assert a.status == 401, a.body
    assert "not ASCII" in a.json()["message"]
    a.assert_quiet_log()


def test_deep_json_on_the_idis_login(node: NodeProcess) -> None:
    a = idis(node, "POST", "/identity/token", DEEP)
    assert a.json()["status"] == -2 and "nests more than" in a.json()["message"], a.body
    a.assert_quiet_log()


def test_deep_json_on_a_rest_put(node: NodeProcess) -> None:
    a = send(node, "PUT", "/api/handles/88.166/DEEP", DEEP, {**JSON, "Authorization": BASIC})
    assert a.status == 400 and "nests more than" in a.json()["message"], a.body
    a.assert_quiet_log()


def test_deep_json_on_rest_sessions(node: NodeProcess) -> None:
    a = send(node, "POST", "/api/sessions", b'{"id": ' + DEEP + b"}", dict(JSON))
    assert a.status == 400 and "nests more than" in a.json()["error"], a.body
    a.assert_quiet_log()


def test_an_unpaired_surrogate_as_idis_password(node: NodeProcess) -> None:
    body = b'{"username": "300:0.NA/88.166", "password": "\\ud800"}'
    a = idis(node, "POST", "/identity/token", body)
    assert a.json()["status"] == -2 and "unpaired surrogate" in a.json()["message"], a.body
    a.assert_quiet_log()


def test_an_admin_index_of_2_to_the_40_on_rest(node: NodeProcess) -> None:
    body = json.dumps(admin_value(2**40)).encode()
    a = send(node, "PUT", "/api/handles/88.166/ADM-1", body, {**JSON, "Authorization": BASIC})
    assert a.status == 400, a.body
    assert "admin index must be an integer from -2147483648 to 2147483647" in a.json()["message"]
    a.assert_quiet_log()


def test_an_admin_index_of_2_to_the_40_on_idis(node: NodeProcess, token: str) -> None:
    body = json.dumps({"handle": "88.166/ADM-2", "value": admin_value(2**40)}).encode()
    a = idis(node, "POST", "/identityv2/data", body, token)
    assert a.json()["status"] == -2 and "admin index" in a.json()["message"], a.body
    a.assert_quiet_log()
    batch = json.dumps([{"handle": "88.166/ADM-3", "value": admin_value(2**40)}]).encode()
    a = idis(node, "POST", "/identityv2/data/batchCreate", batch, token)
    j = a.json()
    assert j["status"] == -2 and j["data"][0]["code"] == -2, a.body
    assert "admin index" in j["data"][0]["msg"]
    a.assert_quiet_log()


# "²" was already a 400 on GET but a 500 on PUT; the others int() reads as numbers.
@pytest.mark.parametrize(
    "index", ["%C2%B2", "%D9%A3", "%EF%BC%91", "1_0", "%201", "99999999999999999999", "-1"]
)
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_an_index_that_is_not_a_plain_ascii_decimal(
    node: NodeProcess, method: str, index: str
) -> None:
    body = b'[{"index": 1, "type": "URL", "data": "https://example.cn"}]'
    a = send(
        node,
        method,
        f"/api/handles/88.166/IDX?index={index}",
        body,
        {**JSON, "Authorization": BASIC},
    )
    assert a.status == 400, (a.status, a.body)
    assert a.json()["message"].startswith("index must be"), a.body
    a.assert_quiet_log()


@pytest.mark.parametrize("query", ["page=%D9%A3", "pageSize=1_0", "page=99999999999999999999"])
def test_a_page_that_is_not_a_plain_ascii_decimal(node: NodeProcess, query: str) -> None:
    a = send(node, "GET", f"/api/handles?prefix=88.166&{query}", None, {"Authorization": BASIC})
    assert a.status == 400 and "page" in a.json()["message"], (a.status, a.body)
    a.assert_quiet_log()


@pytest.mark.parametrize(
    "path", ["/identityv2/data", "/identityv2/data/batchCreate", "/identityv2/data/batchUpdate"]
)
def test_an_idis_value_that_is_not_a_list(node: NodeProcess, token: str, path: str) -> None:
    record: dict[str, Any] = {"handle": "88.166/V-5", "value": 5}
    body = json.dumps(record if path == "/identityv2/data" else [record]).encode()
    a = idis(node, "PUT" if path.endswith("Update") else "POST", path, body, token)
    j = a.json()
    assert j["status"] == -2, a.body
    message = j["message"] if path == "/identityv2/data" else j["data"][0]["msg"]
    assert '"value" must be a JSON array' in message
    a.assert_quiet_log()


# --- the same classes of bug elsewhere ----------------------------------------------------

V = '{"index": 1, "type": "URL", "data": "x"'


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ('[{"index": 1, "type": "URL", "data": "\\udc80"}]', "unpaired surrogate"),
        ('[{"index": 1, "type": "\\ud800", "data": "x"}]', "unpaired surrogate"),
        (f'[{V}, "ttl": {"9" * 5000}}}]', "not JSON"),
        (f'[{V}, "ttl": "9999-12-31T00:00:00Z"}}]', "outside 1970..2038"),
        (f'[{V}, "ttl": "0001-01-01T00:00:00-14:00"}}]', "outside 1970..2038"),
        (f'[{V}, "references": [{{"handle": "88.166/a", "index": 99999999999}}]}}]', "reference"),
        (
            '[{"index": 1, "type": "HS_VLIST", "data": {"format": "vlist", "value": '
            '[{"handle": "88.166/a", "index": 99999999999}]}}]',
            "vlist index",
        ),
        (
            '[{"index": 1, "type": "HS_SITE", "data": {"format": "site", "value": '
            '{"serialNumber": 99999999, "servers": []}}}]',
            "out of range",
        ),
    ],
)
def test_rest_put_values_out_of_their_wire_range(node: NodeProcess, body: str, says: str) -> None:
    raw = body.encode("utf-8", "surrogatepass")
    a = send(node, "PUT", "/api/handles/88.166/RANGE", raw, {**JSON, "Authorization": BASIC})
    assert a.status == 400 and says in a.json()["message"], (a.status, a.body)
    a.assert_quiet_log()


def test_a_surrogate_handle_on_idis(node: NodeProcess, token: str) -> None:
    a = idis(node, "DELETE", "/identityv2/data", b'{"handle": "88.166/\\ud800"}', token)
    assert a.json()["status"] == -2 and "unpaired surrogate" in a.json()["message"], a.body
    a.assert_quiet_log()


@pytest.mark.parametrize("suffix", ["%FF", "%ED%A0%80", "%C3%A9%FF"])
def test_a_handle_path_that_is_not_utf8_is_refused_not_replaced(
    node: NodeProcess, suffix: str
) -> None:
    """Before, %FF became U+FFFD: a PUT created a handle the client never named."""
    body = b'[{"index": 1, "type": "URL", "data": "x"}]'
    a = send(node, "PUT", f"/api/handles/88.166/{suffix}", body, {**JSON, "Authorization": BASIC})
    assert a.status == 400 and "not UTF-8" in a.json()["message"], (a.status, a.body)
    a = send(node, "GET", "/api/handles/88.166/%EF%BF%BD")
    assert a.status == 404, a.body


def test_deep_json_in_a_grpc_template(node: NodeProcess) -> None:
    p = subprocess.run(
        [IDNODE, "apikey", "create", "--admin", ADMIN, "--database-url", node.database_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    start = _log_size(node)
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as ch:
        stub = pb2_grpc.RegistryStub(ch)
        with pytest.raises(grpc.RpcError) as err:
            stub.PutTemplate(
                pb2.PutTemplateRequest(document_json=DEEP.decode()),
                metadata=(("authorization", f"Bearer {p.stdout.strip()}"),),
                timeout=30,
            )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "nests more than" in str(err.value.details())
    Answer(0, b"", _log_since(node, start)).assert_quiet_log()


@pytest.mark.parametrize("iterations", ["\u0663", "1_000"])
def test_a_session_answer_with_a_count_that_is_not_ascii_digits(
    node: NodeProcess, iterations: str
) -> None:
    """PBKDF2 iterations "٣" were read as 3 by int(): now a malformed answer."""
    opened = send(node, "POST", "/api/sessions")
    assert opened.status == 201, opened.body
    answer = {
        "sessionId": opened.json()["sessionId"],
        "id": ADMIN,
        "type": "HS_SECKEY",
        "cnonce": "AAAA",
        "alg": "PBKDF2-HMAC-SHA1",
        "signature": "AAAA",
        "salt": "AAAA",
        "iterations": iterations,
        "length": "160",
    }
    a = send(node, "PUT", "/api/sessions/this", json.dumps(answer).encode(), dict(JSON))
    assert a.status == 401 and a.json()["error"] == "Error parsing Authorization: Handle", a.body
    a.assert_quiet_log()
