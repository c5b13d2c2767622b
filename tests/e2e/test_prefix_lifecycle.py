"""The prefix lifecycle with real `idnode serve` processes: a top-level node T (homes 88;
its operator granted 0.NA/88.166's admin to S), a secondary node S (homes 88.166; its
server admin is the operator; its upward settings name T) and an enterprise node E
(homes 88.166.2002, delegated at S once approved).

An enterprise applies at S with `idnode prefix apply`, the operator approves with
`idnode prefix approve`: the prefix is created at S and registered at T, so a walk from
a root_info naming T reaches S for 88.166.1001/x. Suspended, its handles answer RC 605
on Handle and a 403 on REST, and writes are refused; resumed, it answers again. A
rejection keeps its reason. An approval while T is down is queued and registered once T
is back on its port."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import AdminClient, exchange, resolution_request
from idnode.resolver.codec import CreateHandleRequest, HandleValue, Message, OpCode, ResponseCode
from idnode.resolver.upstream.register import fetch_site
from idnode.resolver.upstream.root_info import write_root_info
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e
RC = ResponseCode
OPERATOR, OPERATOR_SECRET = "300:0.NA/88.166", "secondary secret"
UPWARD = "upward secret"


def idnode(*args: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    p = subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    if ok:
        assert p.returncode == 0, f"idnode {' '.join(args)}: {p.stdout} {p.stderr}"
    assert "Traceback" not in p.stderr
    return p


def init(tmp: Path, name: str, prefix: str, secret: str) -> tuple[str, str]:
    db, key = f"sqlite:///{tmp}/{name}.db", str(tmp / f"{name}.key")
    idnode("init", "--prefix", prefix, "--admin-secret", secret, "--database-url", db,
           "--secret-key-file", key, cwd=tmp)  # fmt: skip
    return db, key


class Hierarchy:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.t_db, self.t_key = init(tmp, "t", "88", "top secret")
        idnode("grant-prefix", "--prefix", "88.166", "--admin-secret", UPWARD,
               "--database-url", self.t_db, "--secret-key-file", self.t_key, cwd=tmp)  # fmt: skip
        self.t_port = free_port()
        self.t = self.start_top()
        s_db, s_key = init(tmp, "s", "88.166", OPERATOR_SECRET)
        self.s = NodeProcess(
            s_db,
            log=tmp / "s.log",
            extra=(
                "--secret-key-file", s_key, "--server-admins", OPERATOR,
                "--upward-top", f"127.0.0.1:{self.t_port}", "--upward-admin", OPERATOR,
                "--upward-secret", UPWARD, "--upward-retry-max", "1",
            ),
        )  # fmt: skip
        e_db, e_key = init(tmp, "e", "88.166.2002", "enterprise secret")
        self.e = NodeProcess(e_db, log=tmp / "e.log", extra=("--secret-key-file", e_key))
        self.t.wait_ready()
        self.s.wait_ready()
        self.e.wait_ready()
        self.root_info = tmp / "root_info"
        write_root_info(self.root_info, [fetch_site(self.t.server)])

    def start_top(self) -> NodeProcess:
        # the same Handle port each time (S's upward setting names it): the last flag wins
        n = NodeProcess(
            self.t_db,
            log=self.tmp / "t.log",
            extra=("--secret-key-file", self.t_key, "--handle-port", str(self.t_port)),
        )
        n.handle_port = self.t_port
        return n

    def operator(self, *args: str, ok: bool = True) -> Any:
        p = idnode("prefix", *args, "--node", self.s.http, "--admin", OPERATOR,
                   "--secret", OPERATOR_SECRET, cwd=self.tmp, ok=ok)  # fmt: skip
        return json.loads(p.stdout)

    def apply(self, *args: str) -> int:
        p = idnode("prefix", "apply", "--node", self.s.http, *args, cwd=self.tmp)
        app = json.loads(p.stdout)["application"]
        assert app["status"] == "pending"
        return int(app["id"])


@pytest.fixture(scope="module")
def h(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hierarchy]:
    hier = Hierarchy(tmp_path_factory.mktemp("lifecycle"))
    try:
        yield hier
    finally:
        for n in (hier.t, hier.s, hier.e):
            code = n.stop()
            assert code in (0, -15), n.log_text()


def create(server: str, admin: str, secret: str, handle: str, text: str) -> Message:
    with AdminClient(server, admin, 300, secret=secret.encode()) as c:
        body = CreateHandleRequest(handle, (HandleValue(1, "URL", text.encode()),))
        return c.request(Message(op_code=OpCode.CREATE_HANDLE, body=body))[-1]


def walk(h: Hierarchy, handle: str) -> dict[str, Any]:
    p = idnode("resolve", handle, "--root-info", str(h.root_info), "--tcp", "--trace", cwd=h.tmp)
    out: dict[str, Any] = json.loads(p.stdout)
    out["trace"] = p.stderr
    return out


def rest_get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def rest_post_refused(url: str, body: dict[str, object], what: str) -> tuple[int, Any]:
    """POST ``body`` as JSON to ``url``, which must refuse it: the status and the JSON."""
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        urllib.request.urlopen(req, timeout=10)
        raise AssertionError(f"{what} accepted")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got or time.monotonic() > end:
            return got
        time.sleep(0.2)


def test_hosted_prefix_applied_approved_resolvable_from_the_top_suspended_resumed(
    h: Hierarchy,
) -> None:
    app_id = h.apply(
        "--prefix", "88.166.1001", "--admin-secret", "acme secret", "--hosted",
        "--contact-organisation", "ACME", "--contact-email", "ops@acme.example",
    )  # fmt: skip
    # not the operator: no list, no approval
    p = idnode("prefix", "list", "--node", h.s.http, "--admin", "300:0.NA/88.166.1001",
               "--secret", "x", cwd=h.tmp, ok=False)  # fmt: skip
    assert p.returncode == 1
    pending = h.operator("list", "--status", "pending")["applications"]
    assert [(a["id"], a["prefix"], a["contact"]["organisation"]) for a in pending] == [
        (app_id, "88.166.1001", "ACME")
    ]
    # the enterprise's admin cannot write before approval
    assert (
        create(h.s.server, "0.NA/88.166.1001", "acme secret", "88.166.1001/x", "x").response_code
        != RC.SUCCESS
    )
    app = h.operator("approve", str(app_id), "--reason", "documents checked")["application"]
    assert app["status"] == "approved" and app["decidedBy"] == OPERATOR
    assert app["upward"] == "registered", app
    # a second approval is refused (decided already)
    assert h.operator("approve", str(app_id), ok=False)["responseCode"] == RC.HANDLE_ALREADY_EXISTS
    # the enterprise's admin registers an identifier at S
    assert (
        create(
            h.s.server, "0.NA/88.166.1001", "acme secret", "88.166.1001/x", "acme x"
        ).response_code
        == RC.SUCCESS
    )
    # T holds 0.NA/88.166.1001 with S's site: a walk from T's root_info reaches S
    out = walk(h, "88.166.1001/x")
    assert out["responseCode"] == 1 and out["values"][0]["data"]["value"] == "acme x"
    hops = out["trace"].splitlines()
    assert hops[0].startswith(f"hop 1: 0.NA/88.166.1001 -> {h.t.server}")
    assert hops[-1].startswith(f"hop 2: 88.166.1001/x -> {h.s.server}")
    # S published its HS_SITE in the homed prefix's record
    rec = exchange(h.s.server, resolution_request("0.NA/88.166.1001"), "tcp")
    assert rec.response_code == RC.SUCCESS

    # suspended: RC 605 and the message on Handle, 403 with JSON on REST, writes refused
    assert h.operator("suspend", "88.166.1001", "--reason", "unpaid")["suspended"] is True
    m = exchange(h.s.server, resolution_request("88.166.1001/x"), "udp")
    assert m.response_code == RC.PREFIX_LIMIT
    assert "prefix 88.166.1001 is suspended" in str(getattr(m.body, "message", ""))
    status, doc = rest_get(h.s.http + "/api/handles/88.166.1001/x")
    assert status == 403 and doc["responseCode"] == RC.PREFIX_LIMIT
    assert doc["message"] == "prefix 88.166.1001 is suspended"
    refused = create(h.s.server, "0.NA/88.166.1001", "acme secret", "88.166.1001/y", "y")
    assert refused.response_code == RC.PREFIX_LIMIT
    assert h.operator("suspended")["suspended"] == [{"prefix": "88.166.1001", "reason": "unpaid"}]
    # 88.166's own handles are not affected
    assert (
        exchange(h.s.server, resolution_request("0.NA/88.166"), "udp").response_code == RC.SUCCESS
    )

    assert h.operator("resume", "88.166.1001")["suspended"] is False
    m = exchange(h.s.server, resolution_request("88.166.1001/x"), "udp")
    assert m.response_code == RC.SUCCESS
    assert (
        create(h.s.server, "0.NA/88.166.1001", "acme secret", "88.166.1001/y", "y").response_code
        == RC.SUCCESS
    )
    assert h.operator("resume", "88.166.1001", ok=False)["responseCode"] == RC.HANDLE_NOT_FOUND
    audit = idnode(
        "audit", "0.NA/88.166.1001", "--database-url", h.s.database_url, cwd=h.tmp
    ).stdout
    for op in (
        "PREFIX_APPLY",
        "PREFIX_APPROVE",
        "PREFIX_UPWARD",
        "PREFIX_SUSPEND",
        "PREFIX_RESUME",
    ):
        assert op in audit, audit


def test_rejection_keeps_its_reason_and_creates_nothing(h: Hierarchy) -> None:
    app_id = h.apply("--prefix", "88.166.1003", "--admin-secret", "s3", "--hosted")
    assert (
        h.operator("reject", str(app_id), "--reason", "", ok=False)["responseCode"]
        == RC.INVALID_VALUE
    )
    app = h.operator("reject", str(app_id), "--reason", "no business licence")["application"]
    assert (app["status"], app["reason"]) == ("rejected", "no business licence")
    m = exchange(h.s.server, resolution_request("0.NA/88.166.1003"), "tcp")
    assert m.response_code == RC.HANDLE_NOT_FOUND
    # applications outside the node's prefixes are refused at once
    p = idnode("prefix", "apply", "--node", h.s.http, "--prefix", "88.200.1", "--admin-secret",
               "s", "--hosted", cwd=h.tmp, ok=False)  # fmt: skip
    assert p.returncode == 1 and "not under a prefix this node homes" in p.stdout


def test_a_delegation_approved_while_the_top_is_down_is_registered_once_it_is_back(
    h: Hierarchy,
) -> None:
    assert h.t.stop() == 0
    app_id = h.apply("--prefix", "88.166.2002", "--admin-secret", "e2", "--site-from", h.e.server)
    app = h.operator("approve", str(app_id))["application"]
    assert app["status"] == "approved" and app["upward"] == "queued" and app["upwardError"]
    # S refers 88.166.2002/... to E at once
    m = exchange(h.s.server, resolution_request("88.166.2002/z"), "tcp")
    assert m.response_code == RC.SERVICE_REFERRAL
    h.t = h.start_top()
    h.t.wait_ready()

    def registered() -> bool:
        a = h.operator("show", str(app_id))["application"]
        return bool(a["upward"] == "registered")

    assert wait_for(registered), h.s.log_text()
    assert (
        create(
            h.e.server, "0.NA/88.166.2002", "enterprise secret", "88.166.2002/z", "at E"
        ).response_code
        == RC.SUCCESS
    )
    out = walk(h, "88.166.2002/z")
    assert out["responseCode"] == 1 and out["values"][0]["data"]["value"] == "at E"
    assert out["trace"].splitlines()[-1].startswith(f"hop 2: 88.166.2002/z -> {h.e.server}")


def test_the_rest_api_fetches_no_site_for_a_caller(h: Hierarchy) -> None:
    # siteFrom would make the node connect where an anonymous caller says and wait on
    # whatever answers: refused, telling the caller to send the site (the CLI's
    # --site-from fetches it on the caller's side, as the delegation test does)
    body: dict[str, object] = {"prefix": "88.166.2100", "adminSecret": "s", "siteFrom": h.e.server}
    status, doc = rest_post_refused(h.s.http + "/api/prefix-applications", body, "siteFrom")
    assert status == 400 and doc["responseCode"] == RC.INVALID_VALUE
    assert "send the enterprise node's HS_SITE as site" in doc["message"]
    assert "88.166.2100" not in json.dumps(h.operator("list")["applications"])
    # a key that is neither PEM nor base64: 400, not a 500
    body = {
        "prefix": "88.166.2101",
        "adminPublicKey": "not base64!",
        "hosted": True,
    }
    status, doc = rest_post_refused(h.s.http + "/api/prefix-applications", body, "a bad key")
    assert status == 400 and "adminPublicKey" in doc["message"]
