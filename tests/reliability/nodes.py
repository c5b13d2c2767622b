"""What the process and connection tests share: a registry with a large handle, the
node's memory (supervisor and workers), its workers, a well-behaved client's checks."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from idnode.loadtest.attack_bench import rss_kib
from idnode.resolver.client import exchange_http, exchange_tcp, exchange_udp, resolution_request
from idnode.resolver.codec import ResolutionResponse
from tests.e2e.node_process import IDNODE, NodeProcess, init_registry

BIG = "88.166.1001/BIG"  # about 64 KB of values: the answer a pipelining attacker asks for
BIG_VALUE = 16_000  # bytes of each of its four values


def registry_with_big_handle(tmp_path: Path, name: str) -> tuple[str, str]:
    """A fresh embedded registry homing 88.166, with 88.166.1001/P-0..9 and BIG: its
    URL and node key file."""
    url, key, _out = init_registry(tmp_path, name)
    lines = [
        {
            "handle": f"88.166.1001/P-{i}",
            "values": [{"index": 1, "type": "URL", "data": {"format": "string", "value": f"u{i}"}}],
        }
        for i in range(10)
    ]
    lines.append(
        {
            "handle": BIG,
            "values": [
                {"index": 10 + k, "type": "DESC", "data": chr(97 + k) * BIG_VALUE} for k in range(4)
            ],
        }
    )
    import_rows(tmp_path / f"{name}.jsonl", lines, url)
    return url, key


def import_rows(data: Path, rows: list[dict[str, Any]], url: str) -> None:
    """Write ``rows`` as JSON lines to ``data`` and `idnode import` them into ``url``."""
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    p = subprocess.run(
        [IDNODE, "import", str(data), "--database-url", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, p.stderr


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # exited meanwhile
            continue
        # pid (comm) state ppid ...: comm may hold spaces, so split after its ')'
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid:
            out.append(int(entry.name))
    return out


def alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def node_rss_mib(node: NodeProcess) -> float:
    """Resident memory of the node: its process and every child (workers), MiB."""
    pids = [node.proc.pid, *children(node.proc.pid)]
    return sum(rss_kib(p) for p in pids) / 1024


def served_correctly(node: NodeProcess) -> None:
    """A well-behaved client from 127.0.0.1 gets right answers on UDP, TCP, the HTTP
    tunnel and /healthz."""
    answers = [
        exchange_udp("127.0.0.1", node.handle_port, resolution_request("88.166.1001/P-0")),
        exchange_tcp(
            "127.0.0.1", node.handle_port, resolution_request("88.166.1001/P-1"), timeout=10
        )[-1],
        exchange_http(
            "127.0.0.1", node.http_port, resolution_request("88.166.1001/P-2"), timeout=10
        ),
    ]
    for i, m in enumerate(answers):
        assert isinstance(m.body, ResolutionResponse), m
        assert m.body.values[0].data == f"u{i}".encode()
    with urllib.request.urlopen(node.http + "/healthz", timeout=10) as r:
        assert json.loads(r.read())["status"] == "ok"


def flood(
    sock: socket.socket, data: bytes, addr: tuple[str, int], n: int, drain: Callable[[], None]
) -> None:
    """Send ``data`` to ``addr`` ``n`` times, draining what came back every 20 sends,
    then drain through a quiet second."""
    for i in range(n):
        sock.sendto(data, addr)
        if i % 20 == 19:
            time.sleep(0.01)
            drain()
    quiet = time.monotonic() + 1.0
    while time.monotonic() < quiet:
        time.sleep(0.05)
        drain()
