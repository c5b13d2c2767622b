"""REST batch uploads (/api/batches) and API keys (/api/api-keys) against a real
`idnode serve` with two workers on PostgreSQL: a job started on one worker is read on
whichever worker a new connection reaches (its state lives in the registry), bad lines
are named with their numbers and never stop the good ones, the bounds hold, and an
administrator sees and revokes only its own keys (a server administrator, all)."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from idnode.loadtest.scratch_db import create_database, drop_database
from idnode.registry.batch_jobs import MAX_LINES
from tests.e2e.node_process import NodeProcess, init_registry

pytestmark = pytest.mark.e2e

SECRET = "S3cret-batches"
CLERK_SECRET = "S3cret-clerk"
OPERATOR = "300:0.NA/88.166"
ADMIN = {
    "Authorization": "Basic " + base64.b64encode(f"300%3A0.NA/88.166:{SECRET}".encode()).decode()
}
CLERK = {
    "Authorization": "Basic "
    + base64.b64encode(f"300%3A88.166/CLERK:{CLERK_SECRET}".encode()).decode()
}
POLLS = 600  # reads of a job's progress before giving up (a bound, not a timing)


def text(index: int, vtype: str, value: str) -> dict[str, Any]:
    return {"index": index, "type": vtype, "data": {"format": "string", "value": value}}


@pytest.fixture(scope="module")
def node(pg_server: tuple[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = f"idnode_batches_{secrets.token_hex(4)}"
    url = asyncio.run(create_database(pg_server[0], name))
    tmp = tmp_path_factory.mktemp("batches")
    reg = init_registry(tmp, "b", "--admin-secret", SECRET, database_url=url)
    n = NodeProcess(
        url,
        workers=2,  # a job's progress must be readable on the worker that did not start it
        log=tmp / "b.log",
        extra=("--secret-key-file", reg.key, "--server-admins", OPERATOR),
    )
    try:
        n.wait_ready()

        async def clerk() -> None:
            async with aiohttp.ClientSession() as s:
                r = await s.put(
                    f"{n.http}/api/handles/88.166/CLERK",
                    json={"values": [text(300, "HS_SECKEY", CLERK_SECRET)]},
                    headers=ADMIN,
                )
                assert r.status == 201, await r.text()

        asyncio.run(clerk())
        yield n.http
    finally:
        assert n.stop() == 0, n.log_text()
        asyncio.run(drop_database(pg_server[0], name))


async def call(
    base: str,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    data: bytes | str | None = None,
    json_body: Any = None,
) -> tuple[int, dict[str, Any]]:
    """One request on a new connection (so successive calls reach either worker)."""
    async with (
        aiohttp.ClientSession() as s,
        s.request(method, base + path, headers=headers, data=data, json=json_body) as r,
    ):
        return r.status, await r.json(content_type=None)


async def finished(base: str, job_id: str, headers: dict[str, str]) -> dict[str, Any]:
    for _ in range(POLLS):
        status, body = await call(base, "GET", f"/api/batches/{job_id}", headers)
        assert status == 200, body
        if body["job"]["state"] != "running":
            return dict(body["job"])
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} still running after {POLLS} reads: {body}")


def jsonl(lines: list[Any]) -> str:
    return "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n"


def test_uploads_need_credentials(node: str) -> None:
    async def run() -> None:
        status, body = await call(node, "POST", "/api/batches", data="{}")
        assert status == 401, body
        status, body = await call(node, "GET", "/api/batches/abc")
        assert status == 401, body
        status, body = await call(node, "GET", "/api/api-keys")
        assert status == 401, body
        status, body = await call(node, "POST", "/api/api-keys", json_body={"label": "x"})
        assert status == 401, body

    asyncio.run(run())


def test_a_jsonl_upload_runs_and_names_its_bad_lines(node: str) -> None:
    good = [{"handle": f"88.166/RB-{i}", "values": [text(1, "URL", f"https://e.cn/{i}")]}
            for i in range(250)]  # fmt: skip
    lines: list[Any] = [*good[:100], "{not json", *good[100:200], {"handle": "88.166/RB-X"}]
    lines += [{"handle": "99.1/ELSEWHERE", "values": [text(1, "URL", "https://e.cn/x")]}]
    lines += good[200:]

    async def run() -> None:
        status, body = await call(node, "POST", "/api/batches", ADMIN, data=jsonl(lines))
        assert status == 202, body
        job = body["job"]
        assert job["total"] == len(lines) and job["state"] in ("running", "done")
        done = await finished(node, job["id"], ADMIN)
        assert (done["state"], done["done"], done["ok"], done["failed"], done["unknown"]) == (
            "done",
            len(lines),
            250,
            3,
            0,
        )
        bad = {r["line"]: r for r in done["results"] if r["status"] != "ok"}
        assert sorted(bad) == [101, 202, 203], bad
        assert "not JSON" in bad[101]["message"]
        assert bad[202]["handle"] == "88.166/RB-X" and "values" in bad[202]["message"]
        assert bad[203]["handle"] == "99.1/ELSEWHERE"
        assert [r["line"] for r in done["results"]] == list(range(1, len(lines) + 1))
        # written: every good line resolves, through the REST API
        status, got = await call(node, "GET", "/api/handles/88.166/RB-249")
        assert status == 200 and got["values"][0]["data"]["value"] == "https://e.cn/249"
        # the same upload again: every good line succeeds again (same values)
        status, body = await call(node, "POST", "/api/batches", ADMIN, data=jsonl(lines))
        assert status == 202, body
        again = await finished(node, body["job"]["id"], ADMIN)
        assert (again["ok"], again["failed"]) == (250, 3)
        # the owner's list has both, newest first
        status, listed = await call(node, "GET", "/api/batches", ADMIN)
        assert status == 200
        assert [j["id"] for j in listed["jobs"]][:2] == [body["job"]["id"], job["id"]]

    asyncio.run(run())


def test_a_csv_upload_and_another_admin_cannot_read_it(node: str) -> None:
    csv = "handle,URL,EMAIL@7\n88.166/CSV-1,https://e.cn/c1,a@e.cn\n\n88.166/CSV-2,,\n"

    async def run() -> None:
        status, body = await call(
            node, "POST", "/api/batches", {**ADMIN, "Content-Type": "text/csv"}, data=csv
        )
        assert status == 202, body
        done = await finished(node, body["job"]["id"], ADMIN)
        assert (done["ok"], done["failed"]) == (1, 1), done
        assert done["results"][1]["line"] == 4 and "no values" in done["results"][1]["message"]
        status, got = await call(node, "GET", "/api/handles/88.166/CSV-1")
        assert status == 200
        assert {(v["index"], v["type"]) for v in got["values"]} == {(1, "URL"), (7, "EMAIL")}
        # the clerk is an administrator too, but not this job's owner: as if absent
        status, other = await call(node, "GET", f"/api/batches/{done['id']}", CLERK)
        assert status == 404, other
        status, listed = await call(node, "GET", "/api/batches", CLERK)
        assert status == 200 and listed["jobs"] == []

    asyncio.run(run())


def test_upload_bounds(node: str) -> None:
    line = json.dumps({"handle": "88.166/B", "values": [text(1, "URL", "u")]})

    async def run() -> None:
        too_many = "\n".join([line] * (MAX_LINES + 1))
        status, body = await call(node, "POST", "/api/batches", ADMIN, data=too_many)
        assert status == 413 and str(MAX_LINES) in body["message"], body
        status, body = await call(node, "POST", "/api/batches", ADMIN, data="\n\n")
        assert status == 400, body
        status, body = await call(node, "POST", "/api/batches?format=xml", ADMIN, data=line)
        assert status == 400, body
        status, body = await call(node, "POST", "/api/batches?replace=true", CLERK, data=line)
        assert status == 403, body  # replacing is for server administrators
        status, body = await call(
            node, "POST", "/api/batches", {**ADMIN, "Content-Type": "text/csv"}, data="a,b\n1,2\n"
        )
        assert status == 400 and "handle" in body["message"], body

    asyncio.run(run())


def test_api_keys_are_their_admins_and_revoked_keys_stop_working(node: str) -> None:
    async def run() -> None:
        status, made = await call(node, "POST", "/api/api-keys", CLERK, json_body={"label": "erp"})
        assert status == 201, made
        key, key_id = made["key"], made["id"]
        assert key.startswith("idn_") and made["admin"] == "300:88.166/CLERK"
        # the clerk sees its key, once listed without the secret
        status, listed = await call(node, "GET", "/api/api-keys", CLERK)
        assert [k["id"] for k in listed["keys"]] == [key_id] and "key" not in listed["keys"][0]
        # making a key for someone else is for server administrators
        status, body = await call(
            node, "POST", "/api/api-keys", CLERK, json_body={"admin": OPERATOR}
        )
        assert status == 403, body
        status, own = await call(node, "POST", "/api/api-keys", ADMIN, json_body={"label": "ops"})
        assert status == 201, own
        # another admin's key: invisible to the clerk, and cannot be revoked by it
        status, listed = await call(node, "GET", "/api/api-keys", CLERK)
        assert own["id"] not in [k["id"] for k in listed["keys"]]
        status, body = await call(node, "DELETE", f"/api/api-keys/{own['id']}", CLERK)
        assert status == 404, body
        # the server administrator sees both
        status, listed = await call(node, "GET", "/api/api-keys", ADMIN)
        assert {own["id"], key_id} <= {k["id"] for k in listed["keys"]}
        # the key works, then is revoked on the same connection (the same worker: its
        # cache of checked credentials forgets the key at once) and no longer does
        bearer = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as s:
            async with s.get(f"{node}/api/api-keys", headers=bearer) as r:
                assert r.status == 200, await r.text()
            async with s.delete(f"{node}/api/api-keys/{key_id}", headers=CLERK) as r:
                assert r.status == 200, await r.text()
            async with s.get(f"{node}/api/handles?prefix=88.166", headers=bearer) as r:
                assert r.status == 401, await r.text()
        status, body = await call(node, "DELETE", f"/api/api-keys/{key_id}", CLERK)
        assert status == 404, body
        status, body = await call(node, "DELETE", "/api/api-keys/xyz", CLERK)
        assert status == 400, body

    asyncio.run(run())


def test_a_burst_with_one_api_key_is_never_throttled(node: str) -> None:
    """40 PUTs and 40 GETs at once, each on its own connection, with one API key never
    checked before: none is refused as a failed authentication (429), though the login
    guard gives a client 10 tries in flight (registry/proven_secrets.py)."""

    async def run() -> None:
        status, made = await call(
            node, "POST", "/api/api-keys", ADMIN, json_body={"label": "burst"}
        )
        assert status == 201, made
        bearer = {"Authorization": f"Bearer {made['key']}"}
        record = {"values": [text(1, "URL", "https://example.org/burst")]}
        puts = [
            call(node, "PUT", f"/api/handles/88.166/BURST-{i}", bearer, json_body=record)
            for i in range(40)
        ]
        gets = [call(node, "GET", "/api/handles?prefix=88.166", bearer) for _ in range(40)]
        answers = await asyncio.gather(*puts, *gets)
        assert [s for s, _ in answers[:40]] == [201] * 40, answers
        assert [s for s, _ in answers[40:]] == [200] * 40, answers

    asyncio.run(run())


def test_templates_over_rest(node: str) -> None:
    doc = {
        "version": "1.0",
        "items": [{"key": "name", "index": 2001, "type": "string", "required": True}],
    }

    async def run() -> None:
        status, body = await call(node, "PUT", "/api/templates/88.166", json_body=doc)
        assert status == 401, body
        status, body = await call(node, "PUT", "/api/templates/88.166", ADMIN, json_body=doc)
        assert status == 201, body
        bad = {**doc, "version": "2.0", "items": [{"key": "name", "index": 2001, "type": "x"}]}
        status, body = await call(node, "PUT", "/api/templates/88.166", ADMIN, json_body=bad)
        assert status == 400 and "type must be one of" in body["message"], body
        status, body = await call(node, "GET", "/api/templates/88.166")
        assert status == 200 and [t["version"] for t in body["templates"]] == ["1.0"]

    asyncio.run(run())
