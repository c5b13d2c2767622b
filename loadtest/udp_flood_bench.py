"""UDP reassembly under a fragment flood, measured (issue 12); not a test.

    python -m idnode.loadtest.udp_flood_bench cost   # µs per fragment at 8k and 32k pending
    python -m idnode.loadtest.udp_flood_bench flood [--pending 8000] [--seconds 10]

``cost`` times, in process, the datagrams of one client at its limit of unfinished
messages while N other messages are pending. ``flood`` starts a real `idnode serve` on
loopback, keeps about N unfinished messages pending from one attacking address (first
fragments from rotating source ports) plus one source port at its limit sending 430
fragments/s, and measures a well-behaved client's resolutions meanwhile (one at a time,
2 s timeout) and the node's CPU and RSS. It runs whatever `idnode` is importable: point
PYTHONPATH at another checkout (a git worktree) and run this file by its path
(``python /work/main/loadtest/udp_flood_bench.py``) to measure that code.
"""

from __future__ import annotations

import argparse
import inspect
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from idnode.loadtest.processes import IDNODE, NodeProcess, _ppid, cpu_seconds
from idnode.resolver.client import resolution_request
from idnode.resolver.codec import Reassembler, decode, encode

HANDLE = "88.166.7/small"


def fragment(request_id: int, size: int = 4000) -> bytes:
    """Datagram 0 of a ``size``-byte request (never completed)."""
    wire = bytearray(encode(resolution_request(HANDLE)))[:20]
    wire[8:12] = request_id.to_bytes(4, "big")
    wire[16:20] = (size - 20).to_bytes(4, "big")
    return bytes(wire) + bytes(492)


def reassembler() -> Reassembler:
    """A table that may hold 32k messages, in either version's keywords."""
    params = inspect.signature(Reassembler).parameters
    kw: dict[str, int] = {"max_bytes": 64 << 20}
    if "max_pending" in params:
        kw["max_pending"] = 1 << 20
    return Reassembler(**kw)


def cost(pending: int, rounds: int = 2000) -> float:
    r = reassembler()
    gram = fragment(1)
    for n in range(pending):
        r.feed((f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", 1000), gram, 0.0)
    at_limit = ("192.0.2.1", 5000)
    for rid in range(8):
        r.feed(at_limit, fragment(rid), 0.0)
    grams = [fragment(100 + i) for i in range(rounds)]
    t0 = time.perf_counter()
    for g in grams:
        r.feed(at_limit, g, 0.0)
    per = (time.perf_counter() - t0) / rounds
    assert len(r) >= pending, len(r)
    return per * 1e6


def rss_mb(pid: int) -> float:
    total = 0
    for p in [pid] + [
        int(s.parent.name) for s in Path("/proc").glob("[0-9]*/stat") if _ppid(s) == pid
    ]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def latencies(port: int, seconds: float) -> tuple[list[float], int]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.3.1", 0))
    out: list[float] = []
    lost = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        req = resolution_request(HANDLE)
        t0 = time.perf_counter()
        s.sendto(encode(req), ("127.0.0.1", port))
        s.settimeout(2.0)
        try:
            while decode(s.recv(65535)).request_id != req.request_id:
                pass
            out.append((time.perf_counter() - t0) * 1000)
        except TimeoutError:
            lost += 1
        time.sleep(0.01)
    s.close()
    return out, lost


def flood(pending: int, seconds: float) -> dict[str, object]:
    tmp = Path(tempfile.mkdtemp(prefix="udp-flood-"))
    db = f"sqlite:///{tmp}/r.db"
    key = str(tmp / "k")
    subprocess.run(
        [IDNODE, "init", "--prefix", "88.166", "--database-url", db, "--secret-key-file", key],
        check=True,
        capture_output=True,
    )
    (tmp / "in.jsonl").write_text(
        json.dumps({"handle": HANDLE, "values": [{"index": 1, "type": "URL", "data": "x"}]}) + "\n"
    )
    subprocess.run(
        [IDNODE, "import", str(tmp / "in.jsonl"), "--database-url", db],
        check=True,
        capture_output=True,
    )
    node = NodeProcess(db, extra=("--secret-key-file", key), log=tmp / "node.log")
    node.wait_ready()
    try:
        base, _ = latencies(node.handle_port, 3.0)
        stop = threading.Event()
        sent = [0]

        def attack() -> None:
            rate = pending / 5.0  # messages expire after 5 s: this keeps ~pending held
            fixed = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            fixed.bind(("127.0.1.1", 0))
            rid, t_next, fixed_next = 1, time.monotonic(), time.monotonic()
            rot: socket.socket | None = None
            while not stop.is_set():
                now = time.monotonic()
                if now < min(t_next, fixed_next):
                    time.sleep(min(t_next, fixed_next) - now)
                    continue
                if now >= t_next:
                    if rid % 8 == 1:
                        if rot is not None:
                            rot.close()
                        rot = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        rot.bind(("127.0.1.1", 0))
                    assert rot is not None
                    rot.sendto(fragment(rid), ("127.0.0.1", node.handle_port))
                    rid += 1
                    t_next += 1.0 / rate
                if now >= fixed_next:  # one port at its limit: each new message evicts
                    fixed.sendto(fragment(1_000_000 + rid), ("127.0.0.1", node.handle_port))
                    rid += 1
                    fixed_next += 1.0 / 430
                sent[0] += 1

        t = threading.Thread(target=attack, daemon=True)
        t.start()
        time.sleep(6.0)  # the table fills for one timeout
        cpu0, w0 = cpu_seconds(node.proc.pid), time.monotonic()
        during, lost = latencies(node.handle_port, seconds)
        cpu = (cpu_seconds(node.proc.pid) - cpu0) / (time.monotonic() - w0)
        rss = rss_mb(node.proc.pid)
        stop.set()
        t.join()
    finally:
        node.stop()

    def summary(xs: list[float]) -> dict[str, float]:
        xs = sorted(xs)
        if not xs:
            return {}
        return {
            "n": len(xs),
            "p50_ms": round(statistics.median(xs), 3),
            "p99_ms": round(xs[int(0.99 * (len(xs) - 1))], 3),
            "max_ms": round(xs[-1], 3),
        }

    return {
        "pending_target": pending,
        "idle": summary(base),
        "during_flood": summary(during),
        "unanswered_2s": lost,
        "node_cpu": f"{cpu:.0%}",
        "node_rss_mb": round(rss, 1),
        "datagrams_sent": sent[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("what", choices=["cost", "flood"])
    ap.add_argument("--pending", type=int, default=8000)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    import idnode.resolver.codec.datagrams as d

    print("code:", d.__file__, file=sys.stderr)
    if a.what == "cost":
        for n in (8000, 32000):
            print(json.dumps({"pending": n, "us_per_fragment_at_limit": round(cost(n), 2)}))
    else:
        print(json.dumps(flood(a.pending, a.seconds)))


if __name__ == "__main__":
    main()
