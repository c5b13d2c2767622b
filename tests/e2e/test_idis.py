"""The IDIS management facade (SNMS) against a real `idnode serve`: login, identifiers,
batches with per-item results, templates, and the SNMS status codes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.node_process import NodeProcess
from tests.e2e.test_rest import ADMIN, SECRET
from tests.e2e.test_rest import node as node
from tests.unit.test_templates import DOC

pytestmark = pytest.mark.e2e


def call(
    node: NodeProcess, method: str, path: str, body: Any = None, token: str | None = None
) -> dict[str, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(node.http + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
            return dict(json.loads(r.read()))
    except urllib.error.HTTPError as e:  # the facade answers 200 with a status, always
        raise AssertionError(f"HTTP {e.code}: {e.read()!r}") from None


def login(node: NodeProcess) -> str:
    j = call(node, "POST", "/identity/token", {"username": ADMIN, "password": SECRET})
    assert j["status"] == 1, j
    return str(j["data"]["token"])


def test_login(node: NodeProcess) -> None:
    assert (
        call(node, "POST", "/identity/token", {"username": ADMIN, "password": "wrong"})["status"]
        == -1
    )
    assert call(node, "POST", "/identity/token", {"nope": 1})["status"] == -2
    assert call(node, "POST", "/identityv2/data", {"handle": "88.166/x"})["status"] == -1
    assert (
        call(node, "POST", "/identityv2/data", {"handle": "88.166/x"}, token="forged")["status"]
        == -1
    )


def test_identifier_lifecycle_and_templates(node: NodeProcess, tmp_path: Path) -> None:
    token = login(node)
    tpl = {**DOC, "prefix": "88.166"}
    assert call(node, "POST", "/snms/api/v5/template", tpl, token)["status"] == 1
    got = call(node, "GET", "/snms/api/v5/template?prefix=88.166&version=v1")
    assert got["data"]["items"][0]["key"] == "productName"
    assert call(node, "DELETE", "/snms/api/v5/template", {}, token)["status"] == -2

    record = {
        "handle": "88.166/SN-1",
        "templateVersion": "v1",
        "value": [
            {"index": 2001, "type": "productName", "data": {"format": "string", "value": "HV-200"}},
            {
                "index": 2002,
                "type": "pressureMPa",
                "data": {"format": "string", "value": "31.5"},
                "auth": "internal",
            },
        ],
    }
    assert call(node, "POST", "/identityv2/data", record, token)["status"] == 1
    detail = call(node, "GET", "/identityv2/data/detail?handle=88.166/SN-1")
    assert detail["status"] == 1 and detail["data"]["templateVersion"] == "v1"
    assert [v["index"] for v in detail["data"]["value"]] == [2001]  # "auth": not public
    bad = {**record, "handle": "88.166/SN-2", "value": record["value"][1:]}
    j = call(node, "POST", "/identityv2/data", bad, token)
    assert j["status"] == -2 and "productName (index 2001): required" in j["message"]
    upd = {
        "handle": "88.166/SN-1",
        "value": [
            {"index": 2001, "type": "productName", "data": {"format": "string", "value": "HV-300"}}
        ],
    }
    assert call(node, "PUT", "/identityv2/data", upd, token)["status"] == 1
    detail = call(node, "GET", "/identityv2/data/detail?handle=88.166/SN-1")
    assert detail["data"]["value"][0]["data"]["value"] == "HV-300"
    assert call(node, "DELETE", "/identityv2/data", {"handle": "88.166/SN-1"}, token)["status"] == 1
    assert call(node, "GET", "/identityv2/data/detail?handle=88.166/SN-1")["status"] == -2


def test_batches_answer_per_record(node: NodeProcess) -> None:
    token = login(node)
    ok = [
        {
            "handle": f"88.166/B-{i}",
            "value": [{"index": 1, "type": "URL", "data": {"format": "string", "value": "u"}}],
        }
        for i in range(3)
    ]
    items = [*ok, {"handle": "99.1/elsewhere", "value": []}, {"value": []}]
    j = call(node, "POST", "/identityv2/data/batchCreate", items, token)
    assert j["status"] == -2 and j["message"] == "2 of 5 records failed"
    assert [r["code"] for r in j["data"]] == [1, 1, 1, -2, -2]
    again = call(node, "POST", "/identityv2/data/batchCreate", ok, token)  # a retry
    assert again["status"] == 1
    j = call(node, "PUT", "/identityv2/data/batchUpdate", ok[:2], token)
    assert [r["code"] for r in j["data"]] == [1, 1]
    j = call(
        node,
        "DELETE",
        "/identityv2/data/batchDelete",
        [{"handle": "88.166/B-0"}, {"handle": "88.166/none"}],
        token,
    )
    assert [r["code"] for r in j["data"]] == [1, -2]
    too_many = [{"handle": f"88.166/X-{i}"} for i in range(2001)]
    assert call(node, "POST", "/identityv2/data/batchCreate", too_many, token)["status"] == -2
