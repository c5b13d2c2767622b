"""The DNS gateway under dnsperf: hot names on one worker, beside a bare uvloop UDP echo.

    python -m idnode.loadtest.dns_bench --handles 1000 --seconds 10

1. a throwaway SQLite registry with ``--handles`` identifiers (loadtest/populate.py, the
   Handle benchmarks' key space), or ``--database-url`` and its first ones;
2. `idnode serve --workers 1 --dns-port P` pinned to the server core (0);
3. a dnsperf query file of their DNS names, TXT and URI each;
4. dnsperf pinned to the load core (1): one pass through the file to warm the caches
   (uncounted), then ``--seconds`` of load with ``--clients`` sockets and ``--outstanding``
   queries in flight;
5. the same dnsperf against the ceiling: a bare uvloop UDP echo (loadtest/ceilings.py
   ``dns``: the query back with QR set) pinned to the same server core.

The report (JSON on stdout): queries/s, latency and response codes of the node and of
the echo, and the node's ratio to the echo (figures on one machine mean little alone:
the ratio says how much of what the machine allows the node reaches).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .ceilings import DESCRIPTIONS
from .keyspace import handle
from .processes import NodeProcess, ProcessError, free_port, pinned, stop, wait_until

ZONE = "id.internal."
TYPES = ("TXT", "URI")
INSTALL = "dnsperf is not installed (Debian/Ubuntu: apt-get install dnsperf)"


@dataclass
class DnsBenchConfig:
    handles: int = 1000  # hot names: the first identifiers of the key space
    seconds: float = 10.0
    clients: int = 4  # dnsperf -c: sockets (source ports)
    outstanding: int = 200  # dnsperf -q: queries in flight
    server_cpus: tuple[int, ...] = (0,)
    load_cpus: tuple[int, ...] = (1,)
    database_url: str = ""  # empty: a throwaway SQLite registry of ``handles`` identifiers
    echo: bool = True  # measure the ceiling too


def dnsperf_path() -> str | None:
    return shutil.which("dnsperf")


def names(count: int, zone: str = ZONE) -> list[str]:
    """The DNS names of identifiers 0..count-1 (the ones that have one)."""
    from idnode.resolver.codec.dns_names import handle_to_name

    out = []
    for i in range(count):
        name = handle_to_name(handle(i), zone)
        if name is not None:
            out.append(name)
    return out


def query_file(path: Path, hot: list[str]) -> Path:
    """dnsperf's input: one "name type" a line."""
    path.write_text("".join(f"{n} {t}\n" for n in hot for t in TYPES))
    return path


def dns_query(name: str = ZONE, qtype: int = 6) -> bytes:
    """A plain DNS query (no dnspython: the harness stays light), SOA by default."""
    wire = b"".join(bytes((len(x),)) + x.encode() for x in name.strip(".").split(".")) + b"\0"
    return b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00" + wire + qtype.to_bytes(2) + b"\0\1"


def wait_dns(port: int, proc: Any = None, log: Path | None = None, timeout: float = 30.0) -> None:
    """Until a DNS query to udp/``port`` gets an answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)

        def answers() -> bool:
            s.sendto(dns_query(), ("127.0.0.1", port))
            return bool(s.recv(65535))

        wait_until(answers, f"dns udp/{port}", timeout=timeout, proc=proc, log=log)


_FIELDS = {
    "sent": r"Queries sent:\s+(\d+)",
    "completed": r"Queries completed:\s+(\d+)",
    "lost": r"Queries lost:\s+(\d+)",
    "run_s": r"Run time \(s\):\s+([\d.]+)",
    "qps": r"Queries per second:\s+([\d.]+)",
    "latency_avg_s": r"Average Latency \(s\):\s+([\d.]+)",
    "latency_min_s": r"Average Latency \(s\):\s+[\d.]+ \(min ([\d.]+)",
    "latency_max_s": r"Average Latency \(s\):\s+[\d.]+ \(min [\d.]+, max ([\d.]+)",
    "latency_stddev_s": r"Latency StdDev \(s\):\s+([\d.]+)",
}


def parse_dnsperf(text: str) -> dict[str, Any]:
    """dnsperf's statistics: counts, queries/s, latency (s), and answers per rcode."""
    out: dict[str, Any] = {}
    for key, pattern in _FIELDS.items():
        m = re.search(pattern, text)
        if m is not None:
            out[key] = float(m.group(1)) if "." in m.group(1) else int(m.group(1))
    codes: dict[str, int] = {}
    m = re.search(r"Response codes:\s+(.*)", text)
    if m is not None:
        for code, n in re.findall(r"([A-Z]+) (\d+)", m.group(1)):
            codes[code] = int(n)
    out["rcodes"] = codes
    if "qps" not in out:
        raise ProcessError("dnsperf printed no statistics:\n" + text[-2000:])
    return out


def dnsperf(
    port: int, data: Path, cfg: DnsBenchConfig, *, seconds: float | None, runs: int | None = None
) -> dict[str, Any]:
    """One dnsperf run against 127.0.0.1:``port``, pinned to the load cores."""
    exe = dnsperf_path()
    if exe is None:
        raise ProcessError(INSTALL)
    args = [exe, "-s", "127.0.0.1", "-p", str(port), "-d", str(data)]
    args += ["-c", str(cfg.clients), "-q", str(cfg.outstanding), "-t", "2"]
    if seconds is not None:
        args += ["-l", str(seconds)]
    if runs is not None:
        args += ["-n", str(runs)]
    limit = (seconds or 60) + 30  # dnsperf stops itself; this only bounds a hang
    p = subprocess.run(
        args,
        capture_output=True,
        text=True,
        timeout=limit,
        preexec_fn=pinned(cfg.load_cpus),
        check=False,
    )
    if p.returncode != 0:
        raise ProcessError(f"dnsperf exited {p.returncode}: {p.stderr[-2000:]}{p.stdout[-2000:]}")
    return parse_dnsperf(p.stdout)


def _registry(cfg: DnsBenchConfig, tmp: Path) -> str:
    if cfg.database_url:
        return cfg.database_url
    from idnode.registry.migrate import upgrade

    from .populate import populate_sqlite

    url = f"sqlite:///{tmp}/registry.db"
    upgrade(url)
    populate_sqlite(str(tmp / "registry.db"), 0, cfg.handles)
    return url


def measure_node(cfg: DnsBenchConfig, url: str, data: Path, tmp: Path) -> dict[str, Any]:
    port = free_port()
    node = NodeProcess(
        url,
        workers=1,
        extra=("--dns-port", str(port), "--dns-zone", ZONE, "--log-level", "warning"),
        log=tmp / "node.log",
        cpus=cfg.server_cpus,
    )
    try:
        node.wait_ready(timeout=60)
        wait_dns(port, node.proc, tmp / "node.log")
        dnsperf(port, data, cfg, seconds=None, runs=1)  # warm: every name once, uncounted
        return dnsperf(port, data, cfg, seconds=cfg.seconds)
    finally:
        node.stop()


def measure_echo(cfg: DnsBenchConfig, data: Path) -> dict[str, Any]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "idnode.loadtest.ceilings", "--door", "dns", "--port", str(port)],
        preexec_fn=pinned(cfg.server_cpus),
    )
    try:
        wait_dns(port, proc)
        return dnsperf(port, data, cfg, seconds=cfg.seconds)
    finally:
        stop(proc)


def run(cfg: DnsBenchConfig) -> dict[str, Any]:
    """The node's figures, the echo's, and their ratio."""
    if dnsperf_path() is None:
        raise ProcessError(INSTALL)
    with tempfile.TemporaryDirectory(prefix="idnode-dns-bench-") as t:
        tmp = Path(t)
        url = _registry(cfg, tmp)
        hot = names(cfg.handles)
        data = query_file(tmp / "queries.txt", hot)
        t0 = time.perf_counter()
        node = measure_node(cfg, url, data, tmp)
        echo = measure_echo(cfg, data) if cfg.echo else None
        ratio = round(node["qps"] / echo["qps"], 3) if echo and echo["qps"] else None
        return {
            "harness": "idnode.loadtest.dns_bench",
            "names": len(hot),
            "types": list(TYPES),
            "queries_in_file": len(hot) * len(TYPES),
            "config": {
                "seconds": cfg.seconds,
                "clients": cfg.clients,
                "outstanding": cfg.outstanding,
                "server_cpus": list(cfg.server_cpus),
                "load_cpus": list(cfg.load_cpus),
                "workers": 1,
            },
            "node": node,
            "ceiling": ({"what": DESCRIPTIONS["dns"]} | echo) if echo else None,
            "ratio_to_ceiling": ratio,
            "wall_s": round(time.perf_counter() - t0, 1),
        }


def summary(report: dict[str, Any]) -> str:
    n, c = report["node"], report.get("ceiling")
    us = n.get("latency_avg_s", 0) * 1e6
    line = (
        f"dns: {n['qps']:,.0f} queries/s, average latency {us:.0f} us, "
        f"rcodes {n['rcodes']}, lost {n.get('lost', 0)}"
    )
    if c:
        line += (
            f"; echo {c['qps']:,.0f} queries/s: ratio {report['ratio_to_ceiling']} of the ceiling"
        )
    return line


def _cpus(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--handles", type=int, default=1000, help="hot names (identifiers)")
    p.add_argument("--seconds", type=float, default=10.0, help="dnsperf -l for each target")
    p.add_argument("--clients", type=int, default=4, help="dnsperf -c")
    p.add_argument("--outstanding", type=int, default=200, help="dnsperf -q")
    p.add_argument("--server-cpus", default="0", help="the node's and the echo's cores")
    p.add_argument("--load-cpus", default="1", help="dnsperf's cores")
    p.add_argument("--database-url", default="", help="a populated registry (default: SQLite)")
    p.add_argument("--no-echo", action="store_true", help="skip the ceiling")
    args = p.parse_args(argv)
    cfg = DnsBenchConfig(
        handles=args.handles,
        seconds=args.seconds,
        clients=args.clients,
        outstanding=args.outstanding,
        server_cpus=_cpus(args.server_cpus),
        load_cpus=_cpus(args.load_cpus),
        database_url=args.database_url,
        echo=not args.no_echo,
    )
    try:
        report = run(cfg)
    except ProcessError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(report), file=sys.stderr)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
