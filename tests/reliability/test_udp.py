"""Hostile UDP clients against a real `idnode serve` on loopback (issue 12).

Every address of 127.0.0.0/8 is this host, so the attacker, the "victim" whose address
requests claim, and the well-behaved client each send from their own loopback network
(127.0.1.x, 127.0.2.x, ...): the node's per-network rate limit tells them apart as it
would on the internet. The node runs with its default settings except that loopback is
not exempt from the rate limit (its default exemption, as loopback cannot be spoofed).

Bounds are asserted, never times: memory of the node's processes, its pending-state
gauges on /metrics, answers to a well-behaved client, bytes sent to a claimed source.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from idnode.resolver.client import exchange, exchange_tcp, resolution_request
from idnode.resolver.codec import (
    ErrorResponse,
    Reassembler,
    ResolutionResponse,
    ResponseCode,
    decode,
    encode,
    split_datagrams,
)
from tests.e2e.node_process import IDNODE, NodeProcess, init_registry
from tests.reliability.nodes import flood, import_rows

pytestmark = pytest.mark.e2e

BIG = "88.166.7/big60"  # 60 values, about 64 KB: 127 datagrams without a cap
MID = "88.166.7/mid"  # about 7 KB: 15 datagrams, under the default cap of 16
SMALL = "88.166.7/small"
RRL_BYTES = 262_144  # the default rate (bytes/s per network), bursts of twice that
PER_CLIENT = 32  # the default unfinished multi-datagram requests per client address


def _values(n: int, size: int) -> list[dict[str, object]]:
    return [
        {"index": i + 1, "type": "DESC", "data": f"{i:04d}" + "v" * (size - 4)} for i in range(n)
    ]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("udp")
    db, key, _ = init_registry(tmp, "udp")
    rows = [
        {"handle": BIG, "values": _values(60, 1024)},
        {"handle": MID, "values": _values(7, 1000)},
        {"handle": SMALL, "values": _values(1, 40)},
    ]
    import_rows(tmp / "in.jsonl", rows, db)
    n = NodeProcess(
        db,
        log=tmp / "node.log",
        extra=("--secret-key-file", key, "--udp-rrl-exempt", ""),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def udp_socket(host: str, rcvbuf: int = 1 << 20) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((host, 0))
    return s


def gauges(node: NodeProcess) -> dict[str, float]:
    with urllib.request.urlopen(node.http + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("idnode_udp_"):
            name, _, value = line.rpartition(" ")
            out[name] = out.get(name, 0.0) + float(value)
    return out


def node_rss_kb(node: NodeProcess) -> int:
    """VmRSS of the node's process and its worker processes, KiB."""
    pids = [node.proc.pid]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == node.proc.pid:
            pids.append(int(stat.parent.name))
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def first_fragment(request_id: int, size: int = 200_000) -> bytes:
    """Datagram 0 of a ``size``-byte request that never completes (full 492-byte chunk)."""
    body = bytes(size - 20)
    wire = bytearray(encode(resolution_request(SMALL)))[:20]
    wire[8:12] = request_id.to_bytes(4, "big")
    wire[16:20] = (size).to_bytes(4, "big")
    return bytes(wire) + body[:492]


def ask(sock: socket.socket, port: int, handle: str, timeout: float) -> int | None:
    """One resolution from ``sock``: its response code, or None when no answer came."""
    req = resolution_request(handle)
    sock.settimeout(timeout)
    sock.sendto(encode(req), ("127.0.0.1", port))
    deadline = time.monotonic() + timeout
    parts = Reassembler()
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65535)
        except TimeoutError:
            return None
        whole = parts.feed("node", data, time.monotonic())
        if whole is not None and (m := decode(whole)).request_id == req.request_id:
            return m.response_code


def test_fragment_flood_leaves_memory_and_pending_state_bounded(node: NodeProcess) -> None:
    # One attacking address sends first fragments of requests that never complete, each
    # from a new source port (so a per-port bound does not hold it), about 3,000 a second
    # for 20,000 fragments; a well-behaved client on another network resolves meanwhile.
    good = udp_socket("127.0.3.1")
    assert ask(good, node.handle_port, SMALL, 5.0) == ResponseCode.SUCCESS
    rss_before = node_rss_kb(node)
    unanswered = asked = 0
    peak = 0.0
    rid = 1
    attacker: socket.socket | None = None
    for burst in range(250):
        for _ in range(10):  # ten source ports per burst, eight fragments each
            if attacker is not None:
                attacker.close()
            attacker = udp_socket("127.0.1.1", rcvbuf=4096)
            for _ in range(8):
                attacker.sendto(first_fragment(rid), ("127.0.0.1", node.handle_port))
                rid += 1
        if burst % 10 == 0:
            asked += 1
            if ask(good, node.handle_port, SMALL, 2.0) != ResponseCode.SUCCESS:
                unanswered += 1
        if burst % 50 == 49:
            peak = max(peak, gauges(node)["idnode_udp_reassembly_pending"])
        time.sleep(0.02)
    if attacker is not None:
        attacker.close()
    time.sleep(1.2)  # the gauges are set once a second
    g = gauges(node)
    rss_growth_mb = (node_rss_kb(node) - rss_before) / 1024
    good.close()
    # 20,000 fragments held would be about 10 MB of payload alone (the scanning table
    # grew the node by 23 MB here)
    assert rss_growth_mb < 8, f"node RSS grew {rss_growth_mb:.1f} MB"
    assert unanswered == 0, f"{unanswered} of {asked} resolutions unanswered during the flood"
    # one client address holds at most its bound, whatever ports it sends from
    assert max(peak, g["idnode_udp_reassembly_pending"]) <= PER_CLIENT, (peak, g)
    assert g["idnode_udp_reassembly_bytes"] <= PER_CLIENT * 492, g
    assert g["idnode_udp_reassembly_clients"] <= 1, g
    assert g["idnode_udp_reassembly_dropped_total"] >= rid - 1 - PER_CLIENT, g


def test_one_udp_answer_is_capped_and_tcp_still_answers_in_full(node: NodeProcess) -> None:
    victim = udp_socket("127.0.2.1", rcvbuf=8 << 20)
    victim.settimeout(0.5)
    n, got, grams = 50, 0, []
    for _ in range(n):
        victim.sendto(encode(resolution_request(BIG)), ("127.0.0.1", node.handle_port))
    while True:
        try:
            data = victim.recv(65535)
        except TimeoutError:
            break
        got += len(data)
        grams.append(data)
    victim.close()
    # 72-byte requests, one small datagram each back (127 datagrams, 64 KB uncapped)
    assert len(grams) <= n and got <= n * 512, (len(grams), got)
    answers = [decode(g) for g in grams]
    assert answers, "no answer at all"
    for m in answers:
        assert m.response_code == ResponseCode.ERROR
        assert isinstance(m.body, ErrorResponse) and "TCP" in m.body.message
    # the handle itself is whole over TCP, where the source is verified
    (m,) = exchange_tcp("127.0.0.1", node.handle_port, resolution_request(BIG))
    assert m.response_code == ResponseCode.SUCCESS and isinstance(m.body, ResolutionResponse)
    assert len(m.body.values) == 60


def test_idnode_resolve_falls_back_to_tcp_for_a_capped_answer(node: NodeProcess) -> None:
    """idnode's own client does what the reference client does with the cap's RC 2."""
    m = exchange(f"127.0.0.1:{node.handle_port}", resolution_request(BIG), "udp")
    assert m.response_code == ResponseCode.SUCCESS and isinstance(m.body, ResolutionResponse)
    assert len(m.body.values) == 60
    p = subprocess.run(
        [IDNODE, "resolve", BIG, "--server", f"127.0.0.1:{node.handle_port}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0 and len(json.loads(p.stdout)["values"]) == 60, p.stderr


def test_answers_to_one_network_are_rate_limited_with_slip(node: NodeProcess) -> None:
    # Requests claiming the victim's address, for a handle under the datagram cap
    # (15 datagrams, about 7.4 KB): 1,500 of them would send it 11 MB.
    victim = udp_socket("127.0.4.1", rcvbuf=8 << 20)
    victim.setblocking(False)
    request = encode(resolution_request(MID))
    assert len(split_datagrams(request)) == 1
    received = answers_slipped = 0
    start = time.monotonic()

    def drain() -> None:
        nonlocal received, answers_slipped
        while True:
            try:
                data = victim.recv(65535)
            except BlockingIOError:
                return
            received += len(data)
            if len(data) < 300 and data[16:20] == (len(data) - 20).to_bytes(4, "big"):
                m = decode(data)
                if m.response_code == ResponseCode.ERROR:
                    answers_slipped += 1

    flood(victim, request, ("127.0.0.1", node.handle_port), 1500, drain)
    elapsed = time.monotonic() - start
    victim.close()
    bound = 2 * RRL_BYTES + RRL_BYTES * elapsed + 1500 * 200
    assert received <= bound, f"{received} bytes reached the claimed source (bound {bound:.0f})"
    assert answers_slipped > 0, "no 'ask over TCP' slipped through to a limited network"
    # another network is not limited by the victim's budget
    other = udp_socket("127.0.5.1")
    assert ask(other, node.handle_port, MID, 5.0) == ResponseCode.SUCCESS
    other.close()
