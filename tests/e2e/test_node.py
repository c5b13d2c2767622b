"""The node as clients meet it: a real `idnode serve` process, real sockets, real Redis."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from idnode.resolver.client import exchange, exchange_tcp, exchange_udp, resolution_request
from idnode.resolver.codec import (
    FrameBuffer,
    HandleValue,
    Message,
    OpCode,
    OpFlag,
    ResolutionResponse,
    ResponseCode,
    SiteInfoResponse,
    decode,
    encode,
)
from idnode.resolver.codec.bodies import CreateHandleRequest, GetSiteInfoRequest
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e

BIG = HandleValue(3, "DESC", b"d" * 1500)  # answers to this handle span several datagrams


def idnode(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [IDNODE, *args], input=stdin, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def registry(tmp_path: Path) -> str:
    """An embedded registry with the node's prefix homed and a few handles imported."""
    url = f"sqlite:///{tmp_path}/node.db"
    assert idnode("init", "--prefix", "88.166", "--database-url", url).returncode == 0
    lines = [
        json.dumps(
            {
                "handle": f"88.166.1001/P-{i}",
                "values": [
                    {
                        "index": 1,
                        "type": "URL",
                        "data": {"format": "string", "value": f"https://e.cn/{i}"},
                    },
                    {"index": 2, "type": "SECRET", "data": "s", "permissions": "1100"},
                ],
            }
        )
        for i in range(20)
    ]
    big = {
        "handle": "88.166.1001/BIG",
        "values": [{"index": 3, "type": "DESC", "data": "d" * 1500}],
    }
    (tmp_path / "in.jsonl").write_text("\n".join([*lines, json.dumps(big)]) + "\n")
    p = idnode("import", str(tmp_path / "in.jsonl"), "--database-url", url)
    assert p.returncode == 0, p.stderr
    assert "imported 21 handles" in p.stdout
    return url


@pytest.fixture
def node(
    registry: str, redis_url: str, redis_namespace: str, tmp_path: Path
) -> Iterator[NodeProcess]:
    n = NodeProcess(
        registry, redis_url=redis_url, namespace=redis_namespace, log=tmp_path / "node.log"
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def test_resolve_over_udp_tcp_and_http(node: NodeProcess) -> None:
    for transport in ("udp", "tcp", "http"):
        server = node.server if transport != "http" else f"127.0.0.1:{node.http_port}"
        m = exchange(server, resolution_request("88.166.1001/p-3"), transport)
        assert m.response_code == ResponseCode.SUCCESS, transport
        assert isinstance(m.body, ResolutionResponse)
        assert [v.index for v in m.body.values] == [1]  # the non-public value stays home
        assert m.body.values[0].data == b"https://e.cn/3"
        assert m.has(OpFlag.AT)


def test_error_answers(node: NodeProcess) -> None:
    m = exchange(node.server, resolution_request("99.9/x"))
    assert m.response_code == ResponseCode.SERVER_NOT_RESPONSIBLE_FOR_HANDLE
    m = exchange(node.server, resolution_request("88.166.1001/absent"))
    assert m.response_code == ResponseCode.HANDLE_NOT_FOUND
    m = exchange(node.server, resolution_request("88.166.1001/P-1", types=("EMAIL",)))
    assert m.response_code == ResponseCode.VALUES_NOT_FOUND


def test_get_site_info(node: NodeProcess) -> None:
    req = Message(op_code=OpCode.GET_SITE_INFO, body=GetSiteInfoRequest("/"), request_id=77)
    m = exchange_udp("127.0.0.1", node.handle_port, req)
    assert m.response_code == ResponseCode.SUCCESS and isinstance(m.body, SiteInfoResponse)
    srv = m.body.site.servers[0]
    assert srv.ip == "127.0.0.1"
    assert {(i.protocol, i.port) for i in srv.interfaces} == {
        (1, node.handle_port),
        (0, node.handle_port),
        (2, node.http_port),
    }


def test_unknown_and_unsupported_opcodes_get_clear_answers(node: NodeProcess) -> None:
    m = exchange_udp("127.0.0.1", node.handle_port, Message(op_code=4242, request_id=5))
    assert m.response_code == ResponseCode.ERROR
    assert "Unknown opCode 4242" in m.body.message  # type: ignore[union-attr]
    create = Message(
        op_code=OpCode.CREATE_HANDLE,
        request_id=6,
        body=CreateHandleRequest("88.166.1001/new", (HandleValue(1, "URL", b"x"),)),
    )
    m = exchange_udp("127.0.0.1", node.handle_port, create)
    assert m.response_code == ResponseCode.AUTHENTICATION_NEEDED  # a write needs an admin
    # a SESSION_SETUP with no body cannot be read: SESSION_FAILED, as the reference answers
    setup = Message(op_code=OpCode.SESSION_SETUP, request_id=7)
    m = exchange_udp("127.0.0.1", node.handle_port, setup)
    assert m.response_code == ResponseCode.SESSION_FAILED
    m = exchange_udp("127.0.0.1", node.handle_port, Message(op_code=OpCode.DUMP_HANDLES))
    assert m.response_code == ResponseCode.OPERATION_NOT_SUPPORTED


def test_multi_packet_answers_and_requests(node: NodeProcess) -> None:
    m = exchange_udp("127.0.0.1", node.handle_port, resolution_request("88.166.1001/BIG"))
    assert m.response_code == ResponseCode.SUCCESS and isinstance(m.body, ResolutionResponse)
    (v,) = m.body.values
    assert v == HandleValue(3, "DESC", b"d" * 1500, timestamp=v.timestamp)
    # a request longer than one datagram (a long handle) is reassembled by the server
    long_handle = "88.166.1001/" + "x" * 900
    m = exchange_udp("127.0.0.1", node.handle_port, resolution_request(long_handle))
    assert m.response_code == ResponseCode.HANDLE_NOT_FOUND


def test_malformed_packets_never_stop_the_server(node: NodeProcess) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        addr = ("127.0.0.1", node.handle_port)
        # readable envelope, broken body: RC 4 PROTOCOL_ERROR with the request id
        env = struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 31337, 0, 28)
        s.sendto(env + struct.pack(">IIIHBBII", 1, 0, 0, 0, 0, 0, 0, 0)[:28], addr)
        reply = decode(s.recv(2048))
        assert reply.response_code == ResponseCode.PROTOCOL_ERROR and reply.request_id == 31337
        # too short to address: dropped silently
        s.sendto(b"\x02\x01junk", addr)
        for junk in (os.urandom(n) for n in (1, 19, 44, 100, 511, 512)):
            s.sendto(junk, addr)
    # and it still answers
    assert exchange(node.server, resolution_request("88.166.1001/P-1")).response_code == 1
    with socket.create_connection(("127.0.0.1", node.handle_port), timeout=5) as t:
        t.sendall(b"\x02\x01\x00\x00" + b"\xff" * 16)  # a 4 GiB message length: hang up
        t.settimeout(5)
        data = t.recv(4096)
        if data:
            assert decode(data).response_code == ResponseCode.PROTOCOL_ERROR
            assert t.recv(4096) == b""
    assert node.health()["status"] == "ok"


def test_tcp_keeps_the_connection_and_answers_pipelined_requests(node: NodeProcess) -> None:
    reqs = [resolution_request(f"88.166.1001/P-{i}", flags=0) for i in range(5)]  # no KC flag
    with socket.create_connection(("127.0.0.1", node.handle_port), timeout=5) as t:
        t.sendall(b"".join(encode(r) for r in reqs))
        fb, got = FrameBuffer(), dict[int, Message]()
        while len(got) < 5:
            for frame in fb.feed(t.recv(65536)):
                m = decode(frame)
                got[m.request_id] = m
        assert set(got) == {r.request_id for r in reqs}
        # a heartbeat on the same connection later still gets an answer
        hb = resolution_request("0")
        t.sendall(encode(hb))
        m = decode(t.recv(65536))
        assert m.request_id == hb.request_id and m.response_code == 301


def test_tcp_answers_a_long_pipelined_burst_of_cached_lookups(node: NodeProcess) -> None:
    """The answers to one read leave together (TcpConnection._write gathers them): a burst
    whose answers pass the gathering bound and the write buffer's high water must still
    get every answer once, each the right one."""
    handles = [f"88.166.1001/p-{i % 20}" for i in range(4000)]
    for h in set(handles):  # every lookup of the burst is an L1 hit, answered at once
        exchange_tcp("127.0.0.1", node.handle_port, resolution_request(h))
    reqs = [replace(resolution_request(h), request_id=i + 1) for i, h in enumerate(handles)]
    want = {r.request_id: h for r, h in zip(reqs, handles, strict=True)}
    with socket.create_connection(("127.0.0.1", node.handle_port), timeout=10) as t:
        t.sendall(b"".join(encode(r) for r in reqs))
        fb, got = FrameBuffer(), dict[int, str]()
        while len(got) < len(reqs):
            data = t.recv(65536)
            assert data, "the node closed the connection"
            for frame in fb.feed(data):
                m = decode(frame)
                assert m.request_id not in got, "an answer came twice"
                assert isinstance(m.body, ResolutionResponse), m
                got[m.request_id] = m.body.handle
        assert got == want


def test_tcp_reads_on_after_its_requests_in_flight_fill_up(node: NodeProcess) -> None:
    """A connection stops reading while 64 of its requests are under way; it must read
    again when they finish. Here each batch is exactly 64 lookups that miss L1 (names
    never asked before), so the 64th fills the slots just as the buffer empties: the
    connection used to stay paused for good and the second batch was never answered."""
    with socket.create_connection(("127.0.0.1", node.handle_port), timeout=10) as t:
        for batch in range(3):
            reqs = [resolution_request(f"88.166.1001/STALL-{batch}-{i}") for i in range(64)]
            t.sendall(b"".join(encode(r) for r in reqs))
            fb, got = FrameBuffer(), set[int]()
            while len(got) < len(reqs):
                data = t.recv(65536)  # a stalled connection times out here
                assert data, "the node closed the connection"
                got.update(decode(f).request_id for f in fb.feed(data))
            assert got == {r.request_id for r in reqs}


def test_http_tunnel_refuses_other_content_types(node: NodeProcess) -> None:
    req = urllib.request.Request(
        node.http + "/", data=b"x", method="POST", headers={"Content-Type": "text/plain"}
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 415


def test_metrics_count_requests_and_cache_tiers(node: NodeProcess) -> None:
    for _ in range(3):
        exchange(node.server, resolution_request("88.166.1001/P-9"))
    with urllib.request.urlopen(node.http + "/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'idnode_requests_total{door="udp",op="1",rc="1"} 3.0' in text
    assert 'idnode_cache_lookups_total{result="hit",tier="l1"} 2.0' in text
    assert "idnode_request_seconds_bucket" in text
    # The worker froze its start-up objects after a full collection, which was timed.
    full = re.search(r'^idnode_gc_pause_seconds_count\{generation="2"\} (\S+)$', text, re.M)
    assert full is not None and float(full.group(1)) >= 1, text
    assert re.search(r"^idnode_event_loop_stalls_total \S+$", text, re.M), text
    # The loop's lateness is measured from start, ten wake-ups a second (the node may
    # have started a moment ago: its first wake-up is awaited, with a bound).
    deadline = time.monotonic() + 10
    while True:
        lag = re.search(r"^idnode_event_loop_lag_seconds_count (\S+)$", text, re.M)
        assert lag is not None, text
        if float(lag.group(1)) >= 1:
            break
        assert time.monotonic() < deadline, "the loop's lag was never measured"
        time.sleep(0.1)
        with urllib.request.urlopen(node.http + "/metrics", timeout=5) as r:
            text = r.read().decode()


def test_resolve_cli(node: NodeProcess) -> None:
    p = idnode("resolve", "88.166.1001/P-2", "--server", node.server, "--tcp")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["values"][0]["data"]["value"] == "https://e.cn/2"
    p = idnode("resolve", "88.166.1001/none", "--server", node.server)
    assert p.returncode == 1 and json.loads(p.stdout)["responseCode"] == 100
    p = idnode("resolve", "88.166.1001/none", "--server", "127.0.0.1:1", "--tcp")
    assert p.returncode == 2 and "cannot reach" in p.stderr


def test_sigterm_finishes_in_flight_requests(registry: str, tmp_path: Path) -> None:
    n = NodeProcess(registry, log=tmp_path / "node.log")
    n.wait_ready()
    assert exchange(n.server, resolution_request("88.166.1001/P-1")).response_code == 1
    assert n.stop() == 0
    assert "stopped" in n.log_text()


def test_import_reports_bad_lines_and_keeps_good_ones(tmp_path: Path, registry: str) -> None:
    f = tmp_path / "mixed.jsonl"
    f.write_text(
        "\n".join(
            [
                json.dumps(
                    {
                        "handle": "88.166.1001/ok-1",
                        "values": [{"index": 1, "type": "URL", "data": "a"}],
                    }
                ),
                "{not json",
                json.dumps(
                    {
                        "handle": "99.1/elsewhere",
                        "values": [{"index": 1, "type": "URL", "data": "c"}],
                    }
                ),
                json.dumps(
                    {"handle": "88.166.1001/bad-value", "values": [{"index": 0, "type": "URL"}]}
                ),
                # (a line without values is refused: tests/e2e/test_first_run.py)
                json.dumps(
                    {
                        "handle": "88.166.1001/ok-2",
                        "values": [{"index": 1, "type": "URL", "data": "d"}],
                    }
                ),
            ]
        )
        + "\n"
    )
    p = idnode("import", str(f), "--database-url", registry)
    assert p.returncode == 1
    assert "imported 2 handles from 5 lines" in p.stdout
    assert f"{f}:2: rejected: not JSON" in p.stderr
    assert f"{f}:3: rejected: 99.1/elsewhere: prefix 99.1 is not homed here" in p.stderr
    assert f"{f}:4: rejected: value index must be a positive integer" in p.stderr
    # running the same import again is safe: registered lines are fine, not conflicts
    again = idnode("import", str(f), "--database-url", registry)
    assert "imported 2 handles from 5 lines" in again.stdout
    # the same handle with other values is a conflict, unless --replace
    g = tmp_path / "changed.jsonl"
    g.write_text(
        json.dumps(
            {"handle": "88.166.1001/ok-1", "values": [{"index": 1, "type": "URL", "data": "b"}]}
        )
        + "\n"
    )
    p = idnode("import", str(g), "--database-url", registry)
    assert p.returncode == 1 and "already registered with other values" in p.stderr
    assert idnode("import", str(g), "--database-url", registry, "--replace").returncode == 0


def test_serve_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    assert idnode("init", "--prefix", "88.166", "--database-url", pg_url).returncode == 0
    f = tmp_path / "pg.jsonl"
    f.write_text(
        json.dumps(
            {
                "handle": "88.166.7/pg",
                "values": [{"index": 1, "type": "URL", "data": "from-postgres"}],
            }
        )
        + "\n"
    )
    assert idnode("import", str(f), "--database-url", pg_url).returncode == 0
    n = NodeProcess(pg_url, log=tmp_path / "pg.log")
    try:
        n.wait_ready()
        m = exchange_tcp("127.0.0.1", n.handle_port, resolution_request("88.166.7/PG"))[-1]
        assert isinstance(m.body, ResolutionResponse)
        assert m.body.values[0].data == b"from-postgres"
    finally:
        assert n.stop() == 0, n.log_text()


def test_workers_share_the_port_and_a_dead_worker_is_replaced(
    registry: str, tmp_path: Path
) -> None:
    log = tmp_path / "workers.log"
    n = NodeProcess(registry, workers=2, log=log)
    try:
        n.wait_ready()
        pids = _worker_pids(n.proc.pid)
        assert len(pids) == 2
        os.kill(pids[0], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            now = _worker_pids(n.proc.pid)
            if len(now) == 2 and pids[0] not in now:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"no replacement worker: {n.log_text()}")
        for i in range(20):  # both workers answer; requests are spread by the kernel
            assert exchange(n.server, resolution_request(f"88.166.1001/P-{i}")).response_code == 1
    finally:
        assert n.stop() == 0, n.log_text()
    assert "restarting" in log.read_text()


def _worker_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(parent)], capture_output=True, text=True, check=False
    ).stdout.split()
    workers = []
    for pid in map(int, out):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_text()
        except FileNotFoundError:  # exited between ps and here (a worker being replaced)
            continue
        # the spawn context also starts a resource tracker; workers run idnode's code
        if "resource_tracker" not in cmdline:
            workers.append(pid)
    return workers


def test_idle_tcp_connections_are_closed(registry: str, tmp_path: Path) -> None:
    n = NodeProcess(registry, extra=("--tcp-idle-timeout", "0.5"), log=tmp_path / "idle.log")
    try:
        n.wait_ready()
        with socket.create_connection(("127.0.0.1", n.handle_port), timeout=10) as t:
            t.sendall(encode(resolution_request("88.166.1001/P-1")))
            assert decode(t.recv(65536)).response_code == 1
            started = time.monotonic()
            assert t.recv(1) == b""  # the server hangs up once the connection idles
            assert time.monotonic() - started < 9
    finally:
        assert n.stop() == 0, n.log_text()


def test_per_client_rate_limit_answers_603(registry: str, tmp_path: Path) -> None:
    n = NodeProcess(registry, extra=("--rate-limit", "5"), log=tmp_path / "rl.log")
    try:
        n.wait_ready()
        codes = [
            exchange_udp(
                "127.0.0.1", n.handle_port, resolution_request("88.166.1001/P-1")
            ).response_code
            for _ in range(30)
        ]
        assert codes[:10].count(ResponseCode.SUCCESS) >= 9  # the burst (2 x 5/s) passes
        assert ResponseCode.REQUEST_LIMIT_DAILY in codes  # then the client is held to 5/s
    finally:
        assert n.stop() == 0, n.log_text()
