"""kill -9 during concurrent writes, with real processes: of the node (its supervisor and
every worker) and of PostgreSQL (a private server this module starts, killed with
SIGKILL and started again on the same data directory: crash recovery).

Writer threads create distinct handles over REST PUT and one over the Handle protocol
(an authenticated AdminClient), and record each write's outcome: acknowledged (2xx, RC
1), refused with an explicit answer (any other status or RC) or unanswered (reset,
refused connection, timeout, or the node saying it cannot know: the registry's
connection went during COMMIT, REST 504 / RC 2 "may have taken effect"). Afterwards,
what the registry holds must agree with what was answered: every acknowledged write is
there with its value and its audit row, and none that was answered as failed is there (a
committed write is never reported failed). An unanswered write may be either; the counts
are printed. No timing is asserted.

Redis killed during writes is tests/reliability/test_outages.py.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import pytest

from idnode.loadtest.processes import free_port, wait_until
from idnode.loadtest.scratch_db import create_database
from idnode.registry.migrate import upgrade
from idnode.resolver.client import AdminClient
from idnode.resolver.codec import (
    CreateHandleRequest,
    HandleValue,
    Message,
    OpCode,
    ResponseCode,
)
from idnode.resolver.codec.values import decode_values
from tests.e2e.node_process import NodeProcess, init_registry
from tests.reliability.nodes import alive, children
from tests.reliability.test_outages import ADMIN, SECRET, auth, rest_value
from tests.services import _pg_binary

pytestmark = pytest.mark.e2e

REST_WRITERS = 4
WRITING = 3.0  # seconds of writes before each kill
CLIENT_TIMEOUT = 10.0


# --- outcomes ------------------------------------------------------------------------


@dataclass
class Outcomes:
    acked: dict[str, str] = field(default_factory=dict)  # handle -> value
    refused: dict[str, str] = field(default_factory=dict)  # handle -> the answer
    unanswered: dict[str, str] = field(default_factory=dict)  # handle -> the exception
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: str, handle: str, what: str) -> None:
        with self.lock:
            getattr(self, kind)[handle] = what

    def total(self) -> int:
        with self.lock:
            return len(self.acked) + len(self.refused) + len(self.unanswered)

    def counts(self) -> dict[str, int]:
        with self.lock:
            return {
                "acknowledged": len(self.acked),
                "refused": len(self.refused),
                "unanswered": len(self.unanswered),
            }


def rest_put(n: NodeProcess, handle: str, value: str) -> tuple[str, str]:
    """('acked'|'refused'|'unanswered', detail) for one REST PUT."""
    body = json.dumps(
        {"values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": value}}]}
    ).encode()
    req = urllib.request.Request(
        f"{n.http}/api/handles/{handle}", data=body, method="PUT", headers=auth()
    )
    try:
        with urllib.request.urlopen(req, timeout=CLIENT_TIMEOUT) as r:
            r.read()
            return ("acked", str(r.status)) if 200 <= r.status < 300 else ("refused", str(r.status))
    except urllib.error.HTTPError as e:
        try:
            raw = e.read()
        except (OSError, http.client.HTTPException) as exc:  # the answer was cut short
            return "unanswered", f"{e.code} then {exc!r}"
        if e.code == 504 and b"may have taken effect" in raw:
            # the connection to the registry went during COMMIT: the node says it cannot
            # know, which is not a failure report; such a write may be there or not
            return "unanswered", f"{e.code} {raw[:120]!r}"
        return "refused", f"{e.code} {e.headers.get_content_type()} {raw[:120]!r}"
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError
        return "unanswered", repr(exc)


def writers(
    n: NodeProcess, tag: str, out: Outcomes, stop: threading.Event
) -> list[threading.Thread]:
    """REST_WRITERS threads over REST PUT and one over the Handle protocol, each creating
    handles of its own until ``stop``."""

    def rest(i: int) -> None:
        k = 0
        while not stop.is_set():
            k += 1
            h, v = f"88.166/{tag}-r{i}-{k}", f"https://{tag}/r{i}/{k}"
            kind, detail = rest_put(n, h, v)
            out.record(kind, h, v if kind == "acked" else detail)
            if kind == "unanswered":
                time.sleep(0.05)  # the node is gone: do not spin on refused connections

    def handle() -> None:
        k = 0
        while not stop.is_set():
            try:
                admin = AdminClient(
                    n.server, *ADMIN, secret=SECRET.encode(), session=False, timeout=CLIENT_TIMEOUT
                )
            except OSError:
                time.sleep(0.05)
                continue
            with admin:
                while not stop.is_set():
                    k += 1
                    h, v = f"88.166/{tag}-h-{k}", f"https://{tag}/h/{k}"
                    msg = Message(
                        op_code=OpCode.CREATE_HANDLE,
                        body=CreateHandleRequest(h, (HandleValue(1, "URL", v.encode()),)),
                    )
                    try:
                        (r,) = admin.request(msg)
                    except Exception as exc:
                        out.record("unanswered", h, repr(exc))
                        time.sleep(0.05)
                        break  # a new connection
                    if r.response_code == ResponseCode.SUCCESS:
                        out.record("acked", h, v)
                    elif "may have taken effect" in repr(r.body):  # outcome unknown
                        out.record("unanswered", h, f"RC {int(r.response_code)} {r.body!r}"[:200])
                    else:
                        out.record("refused", h, f"RC {int(r.response_code)} {r.body!r}"[:200])

    threads = [threading.Thread(target=rest, args=(i,), daemon=True) for i in range(REST_WRITERS)]
    threads.append(threading.Thread(target=handle, daemon=True))
    for t in threads:
        t.start()
    return threads


# --- what the registry holds ---------------------------------------------------------


def registry_contents(db: str, tag: str) -> tuple[dict[str, str], set[str]]:
    """{handle: value at index 1} of the test's handles, and the handles with an audit
    row that answered success (rc 1), read from PostgreSQL itself."""

    async def read() -> tuple[dict[str, str], set[str]]:
        conn = await asyncpg.connect(db)
        try:
            rows = await conn.fetch(
                "SELECT display, vals FROM handles WHERE lower(handle) LIKE $1", f"88.166/{tag}-%"
            )
            audited = await conn.fetch(
                "SELECT DISTINCT lower(handle) AS h FROM audit_log WHERE lower(handle) LIKE $1"
                " AND rc = 1",
                f"88.166/{tag}-%",
            )
        finally:
            await conn.close()
        present = {}
        for row in rows:
            vals = {v.index: v.data.decode() for v in decode_values(bytes(row["vals"]))}
            present[row["display"].lower()] = vals.get(1, "")
        return present, {row["h"] for row in audited}

    return asyncio.run(read())


def check(out: Outcomes, db: str, tag: str, n: NodeProcess) -> dict[str, int]:
    """The invariants, against the registry and through the (restarted or still
    running) node; the counts for the report."""
    present, audited = registry_contents(db, tag)
    lost = {h: v for h, v in out.acked.items() if present.get(h) != v}
    assert lost == {}, (
        f"{len(lost)} acknowledged writes lost or changed, e.g. "
        f"{[(h, v, present.get(h)) for h, v in list(lost.items())[:5]]} ({len(present)} present)"
    )
    failed_but_there = {h: out.refused[h] for h in out.refused if h in present}
    assert failed_but_there == {}, (
        f"{len(failed_but_there)} writes reported failed are committed: "
        f"{list(failed_but_there.items())[:5]}"
    )
    unknown = set(present) - set(out.acked) - set(out.unanswered)
    assert unknown == set(), f"handles nobody wrote: {sorted(unknown)[:5]}"
    unaudited = set(present) - audited
    assert unaudited == set(), f"{len(unaudited)} present writes without audit: {unaudited}"
    wrong = [(h, v) for h, v in out.acked.items() if rest_value(n, h) != v]
    assert wrong == [], f"the node serves other values: {wrong[:5]}"
    counts = out.counts()
    counts["present"] = len(present)
    counts["unanswered present"] = len(set(out.unanswered) & set(present))
    return counts


# --- kill -9 of the node -------------------------------------------------------------


def start_node(
    tmp_path: Path, db: str, key: str, redis_url: str, ns: str, name: str
) -> NodeProcess:
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=ns,
        workers=2,
        log=tmp_path / f"{name}.log",
        extra=("--secret-key-file", key),
    )
    n.wait_ready()
    return n


def test_node_killed_during_writes_loses_nothing_acknowledged(
    tmp_path: Path, pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    db, key, _ = init_registry(tmp_path, "crash", "--admin-secret", SECRET, database_url=pg_url)
    n = start_node(tmp_path, db, key, redis_url, redis_namespace, "before")
    out, stop = Outcomes(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        threads = writers(n, "nk", out, stop)
        time.sleep(WRITING)
        workers = children(n.proc.pid)
        assert workers, "the node has no workers"
        for pid in [n.proc.pid, *workers]:  # the whole node at once, as a crash does
            os.kill(pid, signal.SIGKILL)
        n.proc.wait()
        wait_until(lambda: not any(alive(w) for w in workers), "the workers to die", timeout=10)
        time.sleep(0.5)  # writes against a dead node: unanswered
        stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT + 5)
        assert out.counts()["acknowledged"] > 0, out.counts()

        again = start_node(tmp_path, db, key, redis_url, redis_namespace, "after")
        try:
            counts = check(out, db, "nk", again)
            kind, detail = rest_put(again, "88.166/nk-after", "https://after")
            assert kind == "acked", detail
        finally:
            again.stop()
        print(f"node kill -9: {counts}")
    finally:
        stop.set()
        if n.proc.poll() is None:
            n.stop()


# --- kill -9 of PostgreSQL -----------------------------------------------------------


class PrivatePostgres:
    """A PostgreSQL server of this test only (initdb into a temporary directory, pg_ctl,
    a free loopback port; run as the postgres user when we are root). ``kill()`` sends
    SIGKILL to the postmaster and every backend; ``start()`` on the same data directory
    then goes through crash recovery."""

    def __init__(self) -> None:
        initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            pytest.fail("initdb and pg_ctl are needed for the PostgreSQL crash test", pytrace=False)
        self.pg_ctl = pg_ctl
        self.tmp = Path(tempfile.mkdtemp(prefix="idnode-crash-pg-"))
        self.data = self.tmp / "data"
        self.sock = sock = self.tmp / "sock"
        sock.mkdir()
        self.prefix: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.tmp, "postgres")
            shutil.chown(sock, "postgres")
            self.prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*self.prefix, initdb, "-D", str(self.data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--no-sync"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        self.port = free_port()
        self.opts = f"-p {self.port} -k {sock} -c listen_addresses=127.0.0.1"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        p = subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-o", self.opts,
             "-l", str(self.tmp / "log"), "-w", "-t", "60", "start"],
            check=False,
            capture_output=True,
            text=True,
        )  # fmt: skip
        if p.returncode != 0:
            log = (self.tmp / "log").read_text(errors="replace")[-2000:]
            pytest.fail(f"pg_ctl start failed: {p.stdout}{p.stderr}\n{log}", pytrace=False)

    def kill(self) -> None:
        pid = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGSTOP)  # no new backend from here on: all die at once
        procs = [*children(pid), pid]
        for p in procs:
            os.kill(p, signal.SIGKILL)
        wait_until(lambda: not any(alive(p) for p in procs), "PostgreSQL to die", timeout=10)
        # The postmaster may still be a zombie (its adopter reaps it when it will), which
        # PostgreSQL would take for a running server: its lock files go, as an operator
        # removes them once the server is known dead.
        (self.data / "postmaster.pid").unlink()
        for f in self.sock.iterdir():  # the socket's lock file names the postmaster too
            f.unlink()

    def close(self) -> None:
        subprocess.run(
            [*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    pg = PrivatePostgres()
    yield pg
    pg.close()


def test_postgres_killed_during_writes_loses_nothing_acknowledged(
    tmp_path: Path, private_postgres: PrivatePostgres, redis_url: str, redis_namespace: str
) -> None:
    db = asyncio.run(create_database(private_postgres.url, "crash"))
    upgrade(db)
    db, key, _ = init_registry(tmp_path, "pgcrash", "--admin-secret", SECRET, database_url=db)
    n = start_node(tmp_path, db, key, redis_url, redis_namespace, "pgcrash")
    out, stop = Outcomes(), threading.Event()
    threads: list[threading.Thread] = []
    try:
        threads = writers(n, "pk", out, stop)
        time.sleep(WRITING)
        before = out.counts()
        private_postgres.kill()
        # Writes go on while PostgreSQL is down: each gets an answer (REST 503 JSON,
        # Handle RC 2) within the client's timeout, not silence.
        down_from = out.total()
        wait_until(lambda: out.total() >= down_from + 20, "writes while PostgreSQL is down",
                   timeout=30)  # fmt: skip
        with out.lock:
            during = dict(list(out.refused.items())[-10:])
        private_postgres.start()
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(CLIENT_TIMEOUT + 5)
        assert before["acknowledged"] > 0, before
        assert during, "no write was refused while PostgreSQL was down"
        for h, detail in during.items():
            assert detail.startswith(("503 application/json", "RC 2 ")), (h, detail)

        # The node was not restarted: it serves and writes again.
        wait_until(lambda: n.health()["status"] == "ok", "the node to see PostgreSQL again",
                   timeout=30)  # fmt: skip
        kind, detail = rest_put(n, "88.166/pk-after", "https://after")
        assert kind == "acked", detail
        assert rest_value(n, "88.166/pk-after") == "https://after"
        out.record("acked", "88.166/pk-after", "https://after")
        with AdminClient(n.server, *ADMIN, secret=SECRET.encode(), session=False) as admin:
            (r,) = admin.request(
                Message(
                    op_code=OpCode.CREATE_HANDLE,
                    body=CreateHandleRequest(
                        "88.166/pk-after-h", (HandleValue(1, "URL", b"https://after-h"),)
                    ),
                )
            )
        assert r.response_code == ResponseCode.SUCCESS, r
        out.record("acked", "88.166/pk-after-h", "https://after-h")
        counts = check(out, db, "pk", n)
        print(f"PostgreSQL kill -9: {counts}")
    finally:
        stop.set()
        n.stop()
