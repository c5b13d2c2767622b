"""Open-loop Handle UDP load: requests at a fixed offered rate, latency from the
*intended* send time, so queueing anywhere (server or generator) shows as latency
instead of hiding (no coordinated omission).

For each offered rate in ``--rates`` it measures the bare uvloop echo (the ceiling)
and `idnode serve` with hot handles in L1, server and load on different cores:
throughput against offered load, and p50/p90/p99/p99.9/max against offered load.

    python -m loadtest.openloop_bench --rates 20000,40000,80000,120000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hdrh.histogram import HdrHistogram

from registry.migrate import upgrade

from .report import emit
from .udp_bench import (
    free_port,
    hot_handles,
    packets,
    pinned,
    populate,
    records,
    start_node,
    stop,
    udp_load,
    wait_udp,
)

_RID = struct.Struct(">I")


def open_loop(port: int, pkts: list[bytes], rate: float, seconds: float) -> dict[str, Any]:
    """Send at ``rate``/s for ``seconds``; then wait 1 s for stragglers."""
    hist = HdrHistogram(1, 60_000_000, 3)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    frames = [bytearray(p) for p in pkts]
    intended: dict[int, float] = {}
    sent = answered = 0
    behind = 0.0  # how far the generator fell behind its schedule, at worst
    clock = time.perf_counter
    start = clock()
    end = start + seconds
    interval = 1.0 / rate

    def drain() -> None:
        nonlocal answered
        while True:
            try:
                data = s.recv(65535)
            except BlockingIOError:
                return
            t = intended.pop(_RID.unpack_from(data, 8)[0], None)
            if t is not None:
                hist.record_value(max(1, int((clock() - t) * 1e6)))
                answered += 1

    while True:
        now = clock()
        if now >= end:
            break
        due = start + sent * interval
        while due <= now and due < end:  # send everything whose time has come
            frame = frames[sent % len(frames)]
            rid = sent & 0x7FFFFFFF
            _RID.pack_into(frame, 8, rid)
            intended[rid] = due
            # a full socket buffer loses the request; it is counted as lost
            with contextlib.suppress(BlockingIOError):
                s.send(frame)
            sent += 1
            behind = max(behind, now - due)
            due = start + sent * interval
        drain()
        wait = due - clock()
        if wait > 0:
            select.select([s], [], [], min(wait, 0.001))
    grace = clock() + 1.0
    while intended and clock() < grace:
        select.select([s], [], [], 0.01)
        drain()
    s.close()
    return {
        "offered_per_s": round(rate),
        "sent": sent,
        "answers_per_s": round(answered / seconds),
        "lost": sent - answered,
        "p50_us": hist.get_value_at_percentile(50),
        "p90_us": hist.get_value_at_percentile(90),
        "p99_us": hist.get_value_at_percentile(99),
        "p999_us": hist.get_value_at_percentile(99.9),
        "max_us": hist.get_max_value(),
        "generator_behind_ms": round(behind * 1000, 1),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rates", default="20000,40000,80000,120000")
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--handles", type=int, default=1000)
    p.add_argument("--server-cpu", type=int, default=0)
    p.add_argument("--load-cpu", type=int, default=1)
    p.add_argument("--json", metavar="FILE")
    args = p.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r]
    os.sched_setaffinity(0, {args.load_cpu})
    handles = hot_handles(args.handles)
    pkts = packets(handles)
    tmp = Path(tempfile.mkdtemp(prefix="idnode-openloop-"))
    url = f"sqlite:///{tmp}/o.db"
    upgrade(url)
    asyncio.run(populate(url, records(handles)))
    echo_port = free_port()
    echo = subprocess.Popen(
        [sys.executable, "-m", "loadtest.udp_bench", "--echo", str(echo_port)],
        preexec_fn=pinned(args.server_cpu),
    )
    node, node_port = start_node(url, args.server_cpu, [])
    try:
        wait_udp(echo_port, pkts[0])
        wait_udp(node_port, pkts[0])
        udp_load(node_port, pkts, 0.5, 32)  # warm L1 with every hot handle
        points = []
        for rate in rates:
            ceiling = open_loop(echo_port, pkts, rate, args.seconds)
            served = open_loop(node_port, pkts, rate, args.seconds)
            served["ratio_to_ceiling"] = (
                round(served["answers_per_s"] / ceiling["answers_per_s"], 3)
                if ceiling["answers_per_s"]
                else None
            )
            points.append(
                {"offered_per_s": round(rate), "ceiling_udp_echo": ceiling, "node_l1": served}
            )
    finally:
        stop(echo)
        stop(node)
    emit(
        {
            "benchmark": "handle-udp-open-loop",
            "seconds": args.seconds,
            "server_cpu": args.server_cpu,
            "load_cpu": args.load_cpu,
            "points": points,
        },
        args.json,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
