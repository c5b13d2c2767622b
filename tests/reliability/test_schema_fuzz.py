"""Schemathesis over the node's own OpenAPI document (/openapi.json on the HTTP port): every
REST, /api/sessions and IDIS operation in it, with an administrator's credentials, on a
fixed budget. No answer may be a 5xx, and every answer must be one the document declares
(status code, content type, body schema, headers). The node must log no traceback.

The budget is small and the generation deterministic, so CI runs the same requests every
time. A longer, randomised run (README, "Testing"):

    IDNODE_FUZZ_EXAMPLES=300 IDNODE_FUZZ_SEED=$RANDOM \
        python -m pytest tests/reliability/test_schema_fuzz.py
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from idnode.loadtest.processes import clear_namespace
from tests.e2e.node_process import NodeProcess, admin_node

pytestmark = pytest.mark.e2e
SECRET = "S3cret-for-the-fuzz"
ADMIN = "300:0.NA/88.166"
EXAMPLES = int(os.environ.get("IDNODE_FUZZ_EXAMPLES", "12"))
SEED = os.environ.get("IDNODE_FUZZ_SEED", "")
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
)
SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
METHODS = frozenset({"get", "put", "post", "delete", "patch", "head", "options", "trace"})


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[NodeProcess]:
    namespace = f"idnode-test-fuzz-{secrets.token_hex(3)}"
    yield from admin_node(tmp_path_factory.mktemp("fuzz"), "fuzz", SECRET, redis_url, namespace)
    clear_namespace(redis_url, namespace)


def _get_json(url: str, body: dict[str, str] | None = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def with_split_handle_paths(doc: dict[str, Any]) -> dict[str, Any]:
    """The document plus /api/handles/{prefix}/{suffix}: the same operations as
    /api/handles/{handle}, for the fuzzer only. A generated {handle} has its "/"
    percent-encoded, which the node refuses as a path trick before reading anything else,
    so without this the fuzzer would never get past that check."""
    out = copy.deepcopy(doc)
    split: dict[str, Any] = {}
    for method, op in doc["paths"]["/api/handles/{handle}"].items():
        op = copy.deepcopy(op)
        params = [p for p in op["parameters"] if p["name"] != "handle"]
        op["parameters"] = [
            {
                "name": "prefix",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "example": "88.166"},
            },
            {
                "name": "suffix",
                "in": "path",
                "required": True,
                "schema": {"type": "string", "example": "FUZZ-1"},
            },
            *params,
        ]
        split[method] = op
    out["paths"]["/api/handles/{prefix}/{suffix}"] = split
    return out


def test_no_operation_answers_a_5xx_or_off_the_document(node: NodeProcess, tmp_path: Path) -> None:
    doc = _get_json(node.http + "/openapi.json")
    # Every route the IDIS facade serves is in the document, so the fuzzer covers it.
    for path in ("/identity/token", "/identityv2/data", "/snms/api/v5/template"):
        assert path in doc["paths"], path
    login = _get_json(node.http + "/identity/token", {"username": ADMIN, "password": SECRET})
    assert login["status"] == 1, login
    schema = tmp_path / "openapi.json"
    schema.write_text(json.dumps(with_split_handle_paths(doc)))
    assert node.log_path is not None
    logged_before = node.log_path.stat().st_size
    cmd = [
        str(SCHEMATHESIS),
        "run",
        str(schema),
        "--url",
        node.http,
        # An IDIS login token: the REST door and the IDIS facade both take it as Bearer.
        "--header",
        f"Authorization: Bearer {login['data']['token']}",
        "--checks",
        ",".join(CHECKS),
        "--max-examples",
        str(EXAMPLES),
        "--workers",
        "1",
        "--request-timeout",
        "20",
        "--no-color",
        # Most generated handles and indexes are refused early, by design: that is not a
        # sign of a schema too narrow to search.
        "--suppress-health-check",
        "filter_too_much",
        # Deterministic (no example database either) unless a seed asks for a new search.
        *(["--seed", SEED, "--generation-database", "none"] if SEED else []),
        *([] if SEED else ["--generation-deterministic"]),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False, cwd=tmp_path)
    assert p.returncode == 0, p.stdout[-12000:] + p.stderr[-3000:]
    fuzzed = json.loads(schema.read_text())["paths"]
    operations = sum(1 for ops in fuzzed.values() for method in ops if method in METHODS)
    assert f"Tested: {operations}" in p.stdout, p.stdout[-3000:]  # every one, none skipped
    with node.log_path.open("rb") as f:
        f.seek(logged_before)
        logged = f.read().decode("utf-8", "replace")
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-6000:]


# --- hostile JSON on every route that reads a JSON body ----------------------------------
# Schemathesis generates what the document allows and a little besides; it rarely sends
# what a hostile client does: lone surrogates, numbers far past 32 bits, deep nesting, a
# list where an object belongs. These do, in the shapes each route reads, so the search
# reaches the code behind the first type check. Derandomized in CI (HYPOTHESIS_PROFILE=ci).

HOSTILE_EXAMPLES = int(os.environ.get("IDNODE_FUZZ_EXAMPLES_HOSTILE", str(EXAMPLES * 6)))
_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, -1, 2**31, 2**32, 2**40, 10**30])
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(["\ud800", "a\udfffb", "²", "٣", "1_0", " 1", "", "88.166/x", "300"])
)
_any = st.recursive(
    _leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def _deep(draw: st.DrawFn) -> bytes:
    """A body nested far too deep, sent as it is (bytes: every other body is JSON-encoded)."""
    n = draw(st.integers(60, 5000))
    return b"[" * n + b"]" * n


def _field(s: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return s | _any


_data = _field(
    st.fixed_dictionaries(
        {"format": st.sampled_from(["string", "base64", "hex", "admin", "vlist", "site", "key"])},
        optional={
            "value": _any
            | st.fixed_dictionaries(
                {}, optional={"handle": _any, "index": _any, "permissions": _any}
            )
        },
    )
)
_value = _field(
    st.fixed_dictionaries(
        {
            "index": _field(st.integers(1, 3000)),
            "type": _field(
                st.sampled_from(["URL", "HS_ADMIN", "HS_VLIST", "HS_SITE", "HS_PUBKEY"])
            ),
        },
        optional={
            "data": _data,
            "ttl": _any,
            "timestamp": _any,
            "permissions": _any,
            "references": _any,
            "auth": _any,
        },
    )
)
_record = _field(
    st.fixed_dictionaries(
        {"handle": _field(st.just("88.166/HOSTILE"))},
        optional={"templateVersion": _any, "value": _field(st.lists(_value, max_size=3))},
    )
)
_template = _field(
    st.fixed_dictionaries(
        {"prefix": _field(st.just("88.166")), "version": _field(st.just("fuzz"))},
        optional={
            "items": _field(
                st.lists(
                    _field(
                        st.fixed_dictionaries(
                            {"key": _any, "index": _any},
                            optional={
                                "type": _any,
                                "required": _any,
                                "enabled": _any,
                                "min": _any,
                                "max": _any,
                            },
                        )
                    ),
                    max_size=2,
                )
            )
        },
    )
)
# (method, path, body strategy); REST answers must be < 500, IDIS ones a status but -4.
ROUTES: list[tuple[str, str, st.SearchStrategy[Any]]] = [
    (
        "POST",
        "/identity/token",
        _field(st.fixed_dictionaries({"username": _any, "password": _any})),
    ),
    ("POST", "/identityv2/data", _record),
    ("PUT", "/identityv2/data", _record),
    ("DELETE", "/identityv2/data", _field(st.fixed_dictionaries({"handle": _any}))),
    ("POST", "/identityv2/data/batchCreate", _field(st.lists(_record, max_size=3))),
    (
        "PUT",
        "/identityv2/data/batchUpdate",
        _field(st.fixed_dictionaries({"data": st.lists(_record, max_size=3)})),
    ),
    ("DELETE", "/identityv2/data/batchDelete", _field(st.lists(_any, max_size=3))),
    ("POST", "/snms/api/v5/template", _template),
    ("PUT", "/api/handles/88.166/HOSTILE", _field(st.lists(_value, max_size=3))),
    (
        "PUT",
        "/api/handles/88.166/HOSTILE?index=1",
        _field(st.fixed_dictionaries({"values": st.lists(_value, max_size=3)})),
    ),
    (
        "POST",
        "/api/sessions",
        _field(
            st.dictionaries(
                st.sampled_from(
                    ["id", "sessionId", "cnonce", "type", "alg", "signature", "iterations"]
                ),
                _any,
                max_size=4,
            )
        ),
    ),
]


@pytest.mark.parametrize(
    ("method", "path", "bodies"), ROUTES, ids=[f"{m} {p}" for m, p, _ in ROUTES]
)
def test_hostile_json_bodies_get_a_client_error(
    node: NodeProcess, method: str, path: str, bodies: st.SearchStrategy[Any]
) -> None:
    login = _get_json(node.http + "/identity/token", {"username": ADMIN, "password": SECRET})
    headers = {
        "Content-Type": "application/json",
        "Authorization": f"Bearer {login['data']['token']}",
    }
    assert node.log_path is not None
    logged_before = node.log_path.stat().st_size

    @settings(max_examples=HOSTILE_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies | _deep())
    def one(body: Any) -> None:
        # json.dumps escapes a lone surrogate as \\ud800, as a hostile client would send it.
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(node.http + path, data=raw, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=20) as r:
                status, answer = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, answer = e.code, e.read()
        assert status < 500, (status, answer, raw[:300])
        if not path.startswith("/api/"):
            assert json.loads(answer)["status"] != -4, (answer, raw[:300])

    one()
    with node.log_path.open("rb") as f:
        f.seek(logged_before)
        logged = f.read().decode("utf-8", "replace")
    assert "Traceback" not in logged and " ERROR " not in logged, logged[-6000:]
