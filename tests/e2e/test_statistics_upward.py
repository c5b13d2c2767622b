"""Statistics reported upward with real `idnode serve` processes: a top-level node T
(homes 88; its operator granted 0.NA/88.166's admin to S) and a secondary node S (homes
88.166; its upward settings name T and that admin).

S starts while T is down: what it counts (registrations over Handle TCP, resolutions
over UDP and REST, errors) is flushed into its registry and the reports queue. T comes
up and the queued reports arrive. A test hook blocks S right after T acknowledged a
report and before S marks it sent; S is killed there with SIGKILL and started again: it
sends the same snapshot again, and T's totals equal S's counts, not double. More
resolutions after the restart arrive as a larger cumulative snapshot. A sender
reporting for a prefix it does not administer at T is refused."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from idnode.loadtest.processes import free_port
from idnode.resolver.client import AdminClient, exchange, resolution_request
from idnode.resolver.codec import CreateHandleRequest, HandleValue, Message, OpCode, ResponseCode
from idnode.resolver.upstream.reporting import PAUSE_ENV
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e
RC = ResponseCode
TOP_ADMIN, TOP_SECRET = "300:0.NA/88", "top secret"
OPERATOR, OPERATOR_SECRET = "300:0.NA/88.166", "secondary secret"
UPWARD = "upward secret"
N_HANDLES = 5


def idnode(*args: str, cwd: Path) -> None:
    p = subprocess.run(
        [IDNODE, *args], capture_output=True, text=True, timeout=120, check=False, cwd=cwd
    )
    assert p.returncode == 0, f"idnode {' '.join(args)}: {p.stdout} {p.stderr}"


def init(tmp: Path, name: str, prefix: str, secret: str) -> tuple[str, str]:
    db, key = f"sqlite:///{tmp}/{name}.db", str(tmp / f"{name}.key")
    idnode("init", "--prefix", prefix, "--admin-secret", secret, "--database-url", db,
           "--secret-key-file", key, cwd=tmp)  # fmt: skip
    return db, key


def basic(admin: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{quote(admin, safe='')}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/json"}


def http(url: str, headers: dict[str, str], body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def wait_for(check: Any, what: str, timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.2)


class Nodes:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.t_db, self.t_key = init(tmp, "t", "88", TOP_SECRET)
        idnode("grant-prefix", "--prefix", "88.166", "--admin-secret", UPWARD,
               "--database-url", self.t_db, "--secret-key-file", self.t_key, cwd=tmp)  # fmt: skip
        self.t_port, self.t_http = free_port(), free_port()
        self.s_db, self.s_key = init(tmp, "s", "88.166", OPERATOR_SECRET)
        self.t: NodeProcess | None = None
        self.s = self.start_secondary(pause=tmp / "paused")

    def start_top(self) -> NodeProcess:
        # the same ports each time (S's upward setting names the Handle port; the HTTP
        # port is what T publishes in its HS_SITE): the last flag wins
        t = NodeProcess(
            self.t_db,
            log=self.tmp / "t.log",
            extra=(
                "--secret-key-file", self.t_key, "--server-admins", TOP_ADMIN,
                "--handle-port", str(self.t_port), "--http-port", str(self.t_http),
            ),
        )  # fmt: skip
        t.handle_port, t.http_port = self.t_port, self.t_http
        t.wait_ready()
        self.t = t
        return t

    def start_secondary(self, pause: Path | None = None) -> NodeProcess:
        if pause is not None:
            os.environ[PAUSE_ENV] = str(pause)
        try:
            s = NodeProcess(
                self.s_db,
                log=self.tmp / "s.log",
                extra=(
                    "--secret-key-file", self.s_key, "--server-admins", OPERATOR,
                    "--upward-top", f"127.0.0.1:{self.t_port}", "--upward-admin", OPERATOR,
                    "--upward-secret", UPWARD, "--upward-retry-max", "1",
                    "--statistics-flush", "0.2", "--statistics-report", "0.5",
                ),
            )  # fmt: skip
        finally:
            os.environ.pop(PAUSE_ENV, None)
        s.wait_ready()
        return s

    def local(self) -> list[dict[str, Any]]:
        status, j = http(self.s.http + "/api/statistics/local", basic(OPERATOR, OPERATOR_SECRET))
        assert status == 200, j
        return list(j["statistics"])

    def at_top(self, prefix: str = "88.166") -> dict[str, Any]:
        assert self.t is not None
        status, j = http(
            f"{self.t.http}/api/statistics?prefix={prefix}", basic(TOP_ADMIN, TOP_SECRET)
        )
        assert status == 200, j
        return dict(j)


def resolve(server: str, handle: str, transport: str = "udp") -> int:
    return exchange(server, resolution_request(handle), transport, 5.0).response_code


def counts(row: dict[str, Any]) -> tuple[int, int, int]:
    return row["registrations"], row["resolutions"], row["errors"]


def test_statistics_arrive_at_the_top_exactly_once(tmp_path: Path) -> None:
    n = Nodes(tmp_path)
    try:
        # S counts while T is down
        with AdminClient(n.s.server, "0.NA/88.166", 300, secret=OPERATOR_SECRET.encode()) as c:
            for i in range(N_HANDLES):
                body = CreateHandleRequest(
                    f"88.166/stat-{i}", (HandleValue(1, "URL", f"https://x/{i}".encode()),)
                )
                got = c.request(Message(op_code=OpCode.CREATE_HANDLE, body=body))[-1]
                assert got.response_code == RC.SUCCESS
        for i in range(N_HANDLES):
            for _ in range(3):
                assert resolve(n.s.server, f"88.166/stat-{i}") == RC.SUCCESS
        assert resolve(n.s.server, "88.166/missing", "tcp") == RC.HANDLE_NOT_FOUND
        assert resolve(n.s.server, "88.166/missing") == RC.HANDLE_NOT_FOUND
        for i in range(2):
            with urllib.request.urlopen(f"{n.s.http}/api/handles/88.166/stat-{i}") as r:
                assert r.status == 200
        expected = (N_HANDLES, 3 * N_HANDLES + 4, 2)

        # flushed into S's registry, and queued: T does not answer
        def flushed() -> dict[str, Any] | None:
            rows = [r for r in n.local() if r["prefix"] == "88.166"]
            if rows and counts(rows[0]) == expected and rows[0]["attempts"] > 0:
                return rows[0]
            return None

        row = wait_for(flushed, "S's counts in its registry and a failed report")
        assert not row["reported"] and row["reportedSeq"] == 0
        day = row["day"]

        # T comes up: the queued report arrives; S is blocked by the hook right after
        # T acknowledged it, before marking it sent, and is killed there
        t = n.start_top()
        wait_for((tmp_path / "paused").exists, "T's acknowledgement of S's report")
        top = n.at_top()
        assert [counts(x) for x in top["statistics"]] == [expected]
        assert top["statistics"][0]["day"] == day
        (report,) = top["reports"]
        assert report["sender"] == OPERATOR
        n.s.proc.kill()
        n.s.proc.wait(10)

        # restarted: the row is still unacknowledged at S, sent again, and T keeps one
        # snapshot (the same seq): not counted twice
        n.s = n.start_secondary()
        wait_for(lambda: all(r["reported"] for r in n.local()), "S's report acknowledged")
        top = n.at_top()
        assert [counts(x) for x in top["statistics"]] == [expected]
        (again,) = top["reports"]
        assert (again["node"], again["seq"]) == (report["node"], report["seq"])

        # more counted after the restart: a larger cumulative snapshot replaces it
        assert resolve(n.s.server, "88.166/stat-0") == RC.SUCCESS
        assert resolve(n.s.server, "88.166/stat-1", "tcp") == RC.SUCCESS
        grown = (expected[0], expected[1] + 2, expected[2])

        def arrived() -> bool:
            return [counts(x) for x in n.at_top()["statistics"]] == [grown]

        wait_for(arrived, "the grown snapshot at T")
        (last,) = n.at_top()["reports"]
        assert last["node"] == report["node"] and last["seq"] > report["seq"]
        (mine,) = n.local()
        assert counts(mine) == grown and mine["reported"]

        # T refuses a report for a prefix S's admin does not administer there
        def post(prefix: str) -> tuple[int, Any]:
            body = {
                "node": "forged",
                "reports": [
                    {"prefix": prefix, "day": day, "seq": 1, "registrations": 7,
                     "resolutions": 7, "errors": 0},
                ],
            }  # fmt: skip
            return http(t.http + "/api/statistics", basic(OPERATOR, UPWARD), body)

        for foreign in ("88.200", "88", "99.1"):
            status, j = post(foreign)
            assert status in (400, 403) and j["results"][0]["responseCode"] != 1, (foreign, j)
        assert n.at_top("88.200")["statistics"] == []
        # a prefix under its own (88.166.7) is S's to report
        status, j = post("88.166.7")
        assert status == 200 and j["results"][0]["responseCode"] == 1
        # a wrong secret is not an administrator at all
        status, _ = http(t.http + "/api/statistics", basic(OPERATOR, "wrong"), {"node": "x"})
        assert status == 401
        # S's own operators are not T's: T's statistics are for T's server admins
        status, _ = http(t.http + "/api/statistics", basic(OPERATOR, UPWARD))
        assert status == 403
    finally:
        for node in (n.s, n.t):
            if node is not None and node.proc.poll() is None:
                node.stop()
