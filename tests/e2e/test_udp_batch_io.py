"""The Handle UDP door read and written in batches (recvmmsg/sendmmsg, the default) and
through the event loop's transport (--no-udp-batch-io): real `idnode serve` processes on
IPv4 and IPv6 loopback answer the same requests with the same bytes, multi-datagram
requests and answers included; several workers share the port; a stop is clean."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import urllib.request
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from idnode.loadtest.processes import wait_until
from idnode.resolver.client import resolution_request
from idnode.resolver.codec import Message, OpCode, encode, split_datagrams
from idnode.resolver.codec.codes import ENVELOPE_SIZE, UDP_PAYLOAD_SIZE
from tests.e2e.node_process import IDNODE, NodeProcess

pytestmark = pytest.mark.e2e

try:
    from idnode.resolver import _udp_batch_io  # noqa: F401
except ImportError as exc:
    pytest.skip(f"the compiled module is not built: {exc}", allow_module_level=True)

BATCHED = "handle UDP I/O: batches of up to 64 datagrams"
TRANSPORT = "handle UDP I/O: the event loop's datagram transport (udp_batch_io is off)"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("batch-io")
    url = f"sqlite:///{tmp}/node.db"
    run = [IDNODE, "init", "--prefix", "88.166", "--database-url", url]
    assert subprocess.run(run, capture_output=True, timeout=120, check=False).returncode == 0
    lines = [
        {
            "handle": f"88.166.1001/P-{i}",
            "values": [
                {
                    "index": 1,
                    "type": "URL",
                    "data": {"format": "string", "value": f"https://e/{i}"},
                },
                {"index": 2, "type": "EMAIL", "data": {"format": "string", "value": f"{i}@e.cn"}},
            ],
        }
        for i in range(10)
    ]
    # answers to this handle span several datagrams (4,000 bytes: 9 of them)
    big = [{"index": 3, "type": "DESC", "data": "d" * 4000}]
    lines.append({"handle": "88.166.1001/BIG", "values": big})
    (tmp / "in.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    p = subprocess.run(
        [IDNODE, "import", str(tmp / "in.jsonl"), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    return url


def requests() -> list[list[bytes]]:
    """Each request as the datagrams it is sent in, request ids fixed."""
    msgs = [
        *(resolution_request(f"88.166.1001/P-{i}") for i in range(10)),
        *(resolution_request(f"88.166.1001/P-{i}") for i in range(3)),  # now L1 hits
        resolution_request("88.166.1001/P-4", types=("EMAIL",)),
        resolution_request("88.166.1001/P-5", indexes=(1,)),
        resolution_request("88.166.1001/absent"),
        resolution_request("99.9/not-homed-here"),
        resolution_request("88.166.1001/BIG"),  # a multi-datagram answer
        resolution_request("88.166.1001/BIG"),  # again, from L1
        resolution_request("88.166.1001/" + "x" * 1500),  # a multi-datagram request
        Message(op_code=4242),  # an unknown opCode
        Message(op_code=OpCode.SESSION_SETUP),  # unreadable: SESSION_FAILED
    ]
    out = [split_datagrams(encode(replace(m, request_id=1000 + i))) for i, m in enumerate(msgs)]
    # readable envelope, broken body: RC 4 with the request id
    env = struct.pack(">BBBBIIII", 2, 1, 0, 0, 0, 31337, 0, 28)
    out.append([env + bytes(28)])
    out += [[b""], [b"\x02\x01"], [bytes(20)]]  # empty, shorter than an envelope, all zero
    return out


def answers(host: str, port: int, reqs: list[list[bytes]]) -> list[list[bytes]]:
    """The datagrams of each answer, as they arrived ([] for none within a second)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    out: list[list[bytes]] = []
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(1)
        s.connect((host, port))
        for grams in reqs:
            for g in grams:
                s.send(g)
            try:
                first = s.recv(65_535)
            except TimeoutError:
                out.append([])
                continue
            length = struct.unpack_from(">I", first, 16)[0] if len(first) >= 20 else 0
            more = max(1, -(-length // UDP_PAYLOAD_SIZE)) - 1 if len(first) > ENVELOPE_SIZE else 0
            out.append([first, *(s.recv(65_535) for _ in range(more))])
    return out


def log_of(n: NodeProcess) -> str:
    assert n.log_path is not None
    return n.log_path.read_text(errors="replace")


COUNTED = 'idnode_udp_batch_dropped_total{reason="bad_item"}'  # a count the door reports


def metrics(n: NodeProcess, host: str) -> str:
    base = f"http://{'[::1]' if ':' in host else host}:{n.http_port}"
    with urllib.request.urlopen(f"{base}/metrics", timeout=5) as r:
        return str(r.read().decode())


def serve(registry: str, tmp_path: Path, host: str, *extra: str, workers: int = 1) -> NodeProcess:
    name = f"{host.replace(':', '_')}{'-'.join(extra)}-{workers}"
    n = NodeProcess(
        registry,
        extra=("--listen", host, *extra),
        workers=workers,
        log=tmp_path / f"{name}.log",
    )
    url = f"http://{'[::1]' if ':' in host else host}:{n.http_port}/healthz"

    def ready() -> bool:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(json.loads(r.read())["status"] == "ok")

    wait_until(ready, "idnode serve", timeout=30, proc=n.proc, log=n.log_path)
    return n


@pytest.fixture
def nodes() -> Iterator[list[NodeProcess]]:
    started: list[NodeProcess] = []
    yield started
    for n in started:
        assert n.stop() == 0, n.log_text()


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_the_same_answers_with_and_without_batched_io(
    registry: str, tmp_path: Path, host: str, nodes: list[NodeProcess]
) -> None:
    reqs = requests()
    got = {}
    for setting in ("--udp-batch-io", "--no-udp-batch-io"):
        n = serve(registry, tmp_path, host, setting)
        nodes.append(n)
        got[setting] = answers(host, n.handle_port, reqs)
        assert (BATCHED if setting == "--udp-batch-io" else TRANSPORT) in log_of(n)
        if setting == "--udp-batch-io":
            # the door's counts reach /metrics (reported once a second, off the hot path)
            # and the reporting raised nothing
            wait_until(
                lambda: COUNTED in metrics(nodes[-1], host),
                "the batched door's counts in /metrics",
                timeout=10,
            )
            assert "idnode_udp_send_backlog_bytes" in metrics(n, host)
            assert "Traceback" not in log_of(n), log_of(n)
    on, off = got["--udp-batch-io"], got["--no-udp-batch-io"]
    assert [len(a) for a in on] == [len(a) for a in off]
    assert max(len(a) for a in on) >= 9  # BIG's answer came in several datagrams
    assert on == off


def test_the_default_is_batched_and_workers_share_the_port(
    registry: str, tmp_path: Path, nodes: list[NodeProcess]
) -> None:
    n = serve(registry, tmp_path, "127.0.0.1", workers=2)
    nodes.append(n)
    # one answer per request from whichever worker the kernel picks (SO_REUSEPORT spreads
    # client ports); each socket asks from its own port
    reqs = requests()
    first = answers("127.0.0.1", n.handle_port, reqs)
    for _ in range(5):
        assert answers("127.0.0.1", n.handle_port, reqs) == first
    assert log_of(n).count(BATCHED) == 1  # said once, by the supervisor


def test_the_setting_from_the_environment(
    registry: str, tmp_path: Path, nodes: list[NodeProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IDNODE_UDP_BATCH_IO", "0")
    n = serve(registry, tmp_path, "127.0.0.1")
    nodes.append(n)
    assert TRANSPORT in log_of(n)
    assert len(answers("127.0.0.1", n.handle_port, requests()[:2])) == 2
