"""The Handle.Net-compatible REST API, driven by pyhandle (the EUDAT client, unmodified)
and by plain HTTP for the bad-input cases; a real `idnode serve` process."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from pyhandle.handleclient import RESTHandleClient
from pyhandle.handleexceptions import HandleAlreadyExistsException, HandleAuthenticationError

from tests.e2e.node_process import IDNODE, NodeProcess, admin_node, init_registry

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
    assert http(node, "PUT", "/api/handles/88.166/R-1?overwrite=false", body, auth()) == (
        409,
        {"responseCode": 101, "handle": "88.166/R-1", "message": "88.166/R-1 already exists"},
    )
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
        (  # an unknown top-level field (a misspelt "values" must not write an empty handle)
            "PUT",
            "/api/handles/88.166/B-1",
            b'{"values": [{"index": 1, "type": "URL", "data": "x"}], "ttl": 5}',
            "auth",
            400,
        ),
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


# --- minting and overwriting, as HandleJsonRestApiServlet + HandleServer.doCreateHandle ---

UUID4 = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
JSON = {"Content-Type": "application/json"}
URL_BODY = json.dumps([{"index": 1, "type": "URL", "data": "https://example.cn/m"}]).encode()


@pytest.mark.parametrize(
    ("stem", "shape"), [("88.166/", "88.166/"), ("88.166/MINT-", "88.166/MINT-")]
)
def test_put_mints_a_new_suffix_after_the_stem(node: NodeProcess, stem: str, shape: str) -> None:
    minted = set()
    for _ in range(2):
        status, j = http(node, "PUT", f"/api/handles/{stem}?mintNewSuffix=true", URL_BODY, auth())
        assert status == 201 and j["responseCode"] == 1, j
        assert re.fullmatch(re.escape(shape) + UUID4, j["handle"]), j["handle"]
        assert set(j) == {"responseCode", "handle"}
        minted.add(j["handle"])
        status, got = http(node, "GET", "/api/handles/" + j["handle"])
        assert status == 200 and got["values"][0]["data"]["value"] == "https://example.cn/m"
    assert len(minted) == 2


def test_put_replaces_an_existing_handle_unless_overwrite_is_false(node: NodeProcess) -> None:
    path = "/api/handles/88.166/OVR-1"
    created = {"responseCode": 1, "handle": "88.166/OVR-1"}
    assert http(node, "PUT", path, URL_BODY, auth()) == (201, created)
    other = json.dumps([{"index": 1, "type": "URL", "data": "https://example.cn/2"}]).encode()
    assert http(node, "PUT", path, other, auth()) == (200, created)  # no ?overwrite: replace
    assert http(node, "GET", path)[1]["values"][0]["data"]["value"] == "https://example.cn/2"
    assert http(node, "PUT", path + "?overwrite=true", URL_BODY, auth()) == (200, created)
    assert http(node, "GET", path)[1]["values"][0]["data"]["value"] == "https://example.cn/m"
    status, j = http(node, "PUT", path + "?overwrite=false", other, auth())
    assert (status, j["responseCode"], j["handle"]) == (409, 101, "88.166/OVR-1")
    assert http(node, "GET", path)[1]["values"][0]["data"]["value"] == "https://example.cn/m"
    new = "/api/handles/88.166/OVR-2?overwrite=true"
    assert http(node, "PUT", new, URL_BODY, auth()) == (201, {**created, "handle": "88.166/OVR-2"})


# --- REST sessions (SessionsServlet + StandardHandleAuthenticator) --------------------------

Signer = Callable[[bytes], bytes]


def http_full(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], dict[str, str]]:
    req = urllib.request.Request(node.http + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}"), dict(e.headers)


class RestSession:
    """A REST session client as a reference-server client does it: POST /api/sessions
    for a session id and nonce, sign nonce ‖ cnonce with the key, then send the id."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        status, j, headers = http_full(node, "POST", "/api/sessions")
        assert status == 201 and headers["Location"] == "/api/sessions/this", j
        assert set(j) == {"sessionId", "nonce"}
        self.id: str = j["sessionId"]
        self.nonce = base64.b64decode(j["nonce"])
        assert len(self.nonce) == 16 and len(self.id) >= 22  # at least 128 random bits

    def answer(self, key_id: str, key_type: str, alg: str, sign: Signer) -> str:
        """The Authorization header proving the key over this session's current nonce."""
        cnonce = os.urandom(16)
        signature = sign(self.nonce + cnonce)
        return (
            f'Handle sessionId="{self.id}", id="{quote(key_id, safe="")}", type="{key_type}",'
            f' cnonce="{base64.b64encode(cnonce).decode()}", alg="{alg}",'
            f' signature="{base64.b64encode(signature).decode()}"'
        )

    def prove(self, header: str) -> tuple[int, dict[str, Any]]:
        status, j, _ = http_full(
            self.node, "PUT", "/api/sessions/this", None, {"Authorization": header}
        )
        if "nonce" in j:
            self.nonce = base64.b64decode(j["nonce"])  # every answer uses the nonce up
        return status, j

    def headers(self, session_id: str | None = None) -> dict[str, str]:
        return {
            "Authorization": f'Handle sessionId="{session_id or self.id}"',
            "Content-Type": "application/json",
        }


def secret_signer(secret: bytes, alg: str) -> Signer:
    def sign(data: bytes) -> bytes:
        if alg.startswith("HMAC-"):
            return hmac.new(secret, data, alg[5:].replace("-", "").lower()).digest()
        return hashlib.new(alg.replace("-", "").lower(), secret + data + secret).digest()

    return sign


def rsa_signer(key: rsa.RSAPrivateKey) -> Signer:
    return lambda data: key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def check_session_writes(node: NodeProcess, s: RestSession, header: str, suffix: str) -> None:
    """The contract every key type must meet: answer, write, replay, forge, end."""
    status, j = s.prove(header)
    assert status == 200, j
    assert j["authenticated"] is True and j["id"] == ADMIN and j["sessionId"] == s.id
    path = f"/api/handles/88.166/{suffix}"
    assert http(node, "PUT", path, URL_BODY, s.headers()) == (
        201,
        {"responseCode": 1, "handle": f"88.166/{suffix}"},
    )
    status, j, _ = http_full(node, "GET", "/api/sessions/this", None, s.headers())
    assert status == 200 and j["authenticated"] is True and j["id"] == ADMIN
    # a made-up session id is refused, and writes nothing
    forged = s.headers(secrets.token_urlsafe(32))
    status, j = http(node, "PUT", path + "-FORGED", URL_BODY, forged)
    assert status == 401 and j["responseCode"] == 402, j
    assert http(node, "GET", path + "-FORGED")[0] == 404
    # the same answer again: its nonce is used up
    status, j = s.prove(header)
    assert status == 401 and j["error"] == "Identity not verified" and "authenticated" not in j
    replay = {**s.headers(), "Authorization": header}
    status, j, headers = http_full(node, "PUT", path + "-REPLAY", URL_BODY, replay)
    assert status == 401 and j["responseCode"] == 403, j
    assert headers["WWW-Authenticate"].startswith(f'Handle sessionId="{s.id}", nonce=')
    assert http(node, "GET", path + "-REPLAY")[0] == 404
    # DELETE ends the session; it cannot write or be ended again
    status, _, _ = http_full(node, "DELETE", "/api/sessions/this", None, s.headers())
    assert status == 204
    assert http(node, "PUT", path + "-AFTER", URL_BODY, s.headers())[0] == 401
    assert http_full(node, "GET", "/api/sessions/this", None, s.headers())[0] == 403
    assert http_full(node, "DELETE", "/api/sessions/this", None, s.headers())[0] == 403


@pytest.mark.parametrize("alg", ["SHA256", "HMAC-SHA256", "SHA1", "MD5"])
def test_rest_session_with_a_secret_key(node: NodeProcess, alg: str) -> None:
    s = RestSession(node)
    sign = secret_signer(SECRET.encode(), alg)
    check_session_writes(node, s, s.answer(ADMIN, "HS_SECKEY", alg, sign), f"SK-{alg}")


def test_rest_session_refuses_a_wrong_secret_and_unknown_sessions(node: NodeProcess) -> None:
    s = RestSession(node)
    wrong = s.answer(ADMIN, "HS_SECKEY", "SHA256", secret_signer(b"wrong", "SHA256"))
    status, j = s.prove(wrong)
    assert status == 401 and j["error"] == "Identity not verified" and "authenticated" not in j
    status, j, _ = http_full(node, "GET", "/api/sessions/this", None, s.headers())
    assert status == 200 and "authenticated" not in j  # open, but nobody proved a key
    status, j = http(node, "PUT", "/api/handles/88.166/SK-NO", URL_BODY, s.headers())
    assert (status, j["responseCode"]) == (401, 402)
    # the nonce the wrong answer used up was replaced: a right answer to the new one works
    right = s.answer(ADMIN, "HS_SECKEY", "SHA256", secret_signer(SECRET.encode(), "SHA256"))
    assert s.prove(right)[0] == 200
    missing = f'Handle sessionId="{s.id}", id="{ADMIN}", type="HS_SECKEY", alg="SHA256"'
    status, j = s.prove(missing)
    assert status == 401 and j["error"] == "Missing fields in authentication data"
    # Basic credentials on POST /api/sessions authenticate the new session at once
    status, j, _ = http_full(node, "POST", "/api/sessions", None, auth())
    assert status == 201 and j["authenticated"] is True and j["id"] == ADMIN
    basic = {"Authorization": f'Handle sessionId="{j["sessionId"]}"', **JSON}
    assert http(node, "PUT", "/api/handles/88.166/SK-BASIC", URL_BODY, basic)[0] == 201
    status, j, _ = http_full(node, "POST", "/api/sessions", None, auth("wrong"))
    assert status == 201 and j["error"] == "Identity not verified" and "id" not in j
    unknown = {"Authorization": f'Handle sessionId="{secrets.token_urlsafe(32)}"'}
    assert http_full(node, "GET", "/api/sessions/this", None, unknown)[0] == 403
    assert http_full(node, "DELETE", "/api/sessions/this", None, unknown)[0] == 403
    assert http_full(node, "POST", "/api/sessions", None, unknown)[0] == 400
    assert http_full(node, "GET", "/api/sessions")[0] == 405
    assert http_full(node, "GET", "/api/sessions/other")[0] == 403
    assert http(node, "GET", "/api/sessions/this") == (200, {"authenticated": False})


@pytest.fixture
def rsa_node(
    tmp_path: Path, redis_url: str, redis_namespace: str
) -> Iterator[tuple[NodeProcess, rsa.RSAPrivateKey]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = tmp_path / "admin.pub.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    db, node_key, _ = init_registry(tmp_path, "rsa", "--admin-pubkey", str(pem))
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=redis_namespace,
        workers=2,
        log=tmp_path / "rsa.log",
        extra=("--secret-key-file", node_key),
    )
    n.wait_ready()
    yield n, key
    assert n.stop() == 0, n.log_text()


def test_rest_session_with_an_rsa_key(rsa_node: tuple[NodeProcess, rsa.RSAPrivateKey]) -> None:
    node, key = rsa_node
    s = RestSession(node)
    check_session_writes(node, s, s.answer(ADMIN, "HS_PUBKEY", "SHA256", rsa_signer(key)), "PK-1")
    # another key does not prove 300:0.NA/88.166
    s = RestSession(node)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    status, j = s.prove(s.answer(ADMIN, "HS_PUBKEY", "SHA256", rsa_signer(other)))
    assert status == 401 and j["error"] == "Identity not verified"
    # a bare handle means "any of its keys": the one that verifies is the identity
    status, j = s.prove(s.answer("0.NA/88.166", "HS_PUBKEY", "SHA256", rsa_signer(key)))
    assert status == 200 and j["id"] == ADMIN
    # two workers share every session: many requests, each may reach either worker
    for i in range(12):
        path = f"/api/handles/88.166/PK-W{i}"
        assert http(node, "PUT", path, URL_BODY, s.headers())[0] == 201
