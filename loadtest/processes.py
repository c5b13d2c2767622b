"""The processes a load test or a test starts, and how to wait for them and stop them.

One copy, shared: the load-test harness ships in the wheel, and the test suite imports
it from there (tests/e2e/node_process.py, tests/services.py, the interop harness).

    node = NodeProcess(database_url, log=tmp / "node.log")   # `idnode serve`, free ports
    node.wait_ready()
    ...
    assert node.stop() == 0

Every wait watches the process it waits for: a child that exits early fails the wait at
once, with the tail of its log, instead of after the whole timeout.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import cast

from idnode.errors import IdnodeError

Process = subprocess.Popen[bytes]


def _idnode_command() -> str:
    """The `idnode` of this interpreter's installation (a venv's bin), else PATH's: a
    harness must start the node it was installed with, not another one on PATH."""
    beside = Path(sys.executable).parent / "idnode"
    if beside.exists():
        return str(beside)
    return shutil.which("idnode") or str(beside)


IDNODE = _idnode_command()


class ProcessError(IdnodeError, RuntimeError):
    """A process did not come up, or exited, or nothing answers where it should."""


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


_handed_out: set[int] = set()


def free_port(also: int = 0) -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (a node takes both on its Handle
    port); with ``also``, the port that far above it is free (TCP) and reserved too (a
    Redis Cluster node listens on its port + 10000 for the cluster bus).

    Chosen below the kernel's ephemeral range: a port the kernel hands out for bind(0)
    is also one it hands to the next outgoing connection, so between this check and the
    node's bind a client socket elsewhere could take it (seen in CI: "Address already in
    use" on a port picked a moment before). A port is not handed out twice by one
    process."""
    low, _ = _ephemeral_range()
    pool_low, pool_high = (10000, low - 1) if low > 12000 else (1024 + 1, low - 1)
    pool_high -= also
    if pool_high <= pool_low:
        raise ProcessError(f"no room below the ephemeral ports ({low}) for a port and +{also}")
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(pool_low, pool_high)
        if port in _handed_out or port + also in _handed_out:
            continue
        try:
            with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                t.bind(("127.0.0.1", port))
                u.bind(("127.0.0.1", port))
            if also:
                with socket.socket() as bus:
                    bus.bind(("127.0.0.1", port + also))
        except OSError:
            continue
        _handed_out.update({port, port + also})
        return port
    raise ProcessError("no port free for both TCP and UDP on 127.0.0.1 after 200 tries")


def pinned(cpus: Iterable[int]) -> Callable[[], None]:
    """A ``preexec_fn`` pinning the child to ``cpus`` (load and server on their own cores)."""
    chosen = set(cpus)
    return lambda: os.sched_setaffinity(0, chosen)


def log_tail(log: Path | None, size: int = 3000) -> str:
    if log is None or not log.exists():
        return ""
    return log.read_text(errors="replace")[-size:]


def wait_until(
    check: Callable[[], bool],
    what: str,
    *,
    timeout: float,
    proc: Process | None = None,
    log: Path | None = None,
    retry_on: tuple[type[BaseException], ...] = (OSError,),
    interval: float = 0.1,
) -> None:
    """Poll ``check`` until it is true. An error in ``retry_on`` counts as "not yet";
    ``proc`` exiting first, or the deadline, raises ProcessError with ``log``'s tail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ProcessError(f"{what}: exited with {proc.returncode}\n{log_tail(log)}")
        try:
            if check():
                return
        except retry_on:
            pass
        time.sleep(interval)
    raise ProcessError(f"{what}: not within {timeout:g} s\n{log_tail(log)}")


def wait_port(
    port: int,
    *,
    proc: Process | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
    host: str = "127.0.0.1",
) -> None:
    """Until something accepts TCP connections on ``host:port``."""

    def accepts() -> bool:
        with socket.create_connection((host, port), timeout=0.5):
            return True

    wait_until(accepts, f"tcp/{port}", timeout=timeout, proc=proc, log=log)


def wait_udp(
    port: int,
    packet: bytes,
    *,
    proc: Process | None = None,
    log: Path | None = None,
    timeout: float = 30.0,
) -> None:
    """Until a datagram sent to udp/``port`` on 127.0.0.1 gets any answer."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)

        def answers() -> bool:
            s.sendto(packet, ("127.0.0.1", port))
            s.recv(65535)
            return True

        wait_until(answers, f"udp/{port}", timeout=timeout, proc=proc, log=log)


def wait_log_line(
    log: Path, text: str, *, proc: Process | None = None, timeout: float = 60.0
) -> None:
    """Until ``text`` appears in the file ``log`` (a process that announces it is up)."""
    needle = text.encode()
    wait_until(
        lambda: needle in log.read_bytes(),
        f"{text!r} in {log.name}",
        timeout=timeout,
        proc=proc,
        log=log,
        interval=0.2,
    )


def stop(proc: Process, timeout: float = 20.0) -> int:
    """SIGTERM (a node drains and exits 0), then SIGKILL after ``timeout``; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def clear_namespace(redis_url: str, namespace: str) -> int:
    """Delete every Redis key under ``namespace:``; how many went. A run must not leave
    its keys behind (a load test's can be millions: scanned and unlinked in batches)."""
    import redis

    r = redis.Redis.from_url(redis_url)
    n = 0
    try:
        batch = []
        for k in r.scan_iter(match=f"{namespace}:*", count=5000):
            batch.append(k)
            if len(batch) >= 5000:
                n += cast(int, r.unlink(*batch))
                batch = []
        if batch:
            n += cast(int, r.unlink(*batch))
    finally:
        r.close()
    return n


def _processes() -> Iterator[tuple[int, str, list[str]]]:
    """(pid, command name, the fields after it) of every process in /proc, each read once."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # gone since the listing
        head, _, rest = text.rpartition(")")
        yield int(stat.parent.name), head.partition("(")[2], rest.split()


def cpu_seconds(pid: int) -> float:
    """CPU time (user and system) of ``pid`` and its children (a node's workers)."""
    ticks = sum(int(f[11]) + int(f[12]) for p, _, f in _processes() if p == pid or int(f[1]) == pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_seconds_named(*names: str) -> float:
    """CPU time of every process on the machine whose command name is one of ``names``
    ("postgres" for PostgreSQL's backends and helpers, "redis-server"): what a load costs
    the services behind the node, read as the node's own is. With the CPU of reaped
    children (cutime, cstime): a backend that exits during the reading moves its CPU to
    the postmaster's, not out of the sum."""
    ticks = sum(sum(int(x) for x in f[11:15]) for _, comm, f in _processes() if comm in names)
    return ticks / os.sysconf("SC_CLK_TCK")


def _ppid(stat: Path) -> int:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


class NodeProcess:
    """`idnode serve` on free loopback ports: Handle (TCP and UDP), HTTP and gRPC.

    Its output goes to ``log`` (truncated first) or nowhere. ``cpus`` pins it. The
    shutdown grace is short: whoever stops a harness node has stopped its load first.
    """

    def __init__(
        self,
        database_url: str,
        *,
        redis_url: str = "",
        namespace: str = "",
        workers: int = 1,
        extra: Sequence[str] = (),
        log: Path | None = None,
        cpus: Iterable[int] | None = None,
        shutdown_grace: float = 3.0,
    ) -> None:
        self.database_url = database_url
        self.handle_port = free_port()
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.log_path = log
        args = [
            IDNODE,
            "serve",
            "--database-url",
            database_url,
            "--listen",
            "127.0.0.1",
            "--handle-port",
            str(self.handle_port),
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--workers",
            str(workers),
            "--shutdown-grace",
            str(shutdown_grace),
            *extra,
        ]
        if namespace:
            args += ["--redis-namespace", namespace]
        if redis_url:
            args += ["--redis-url", redis_url]
        # The node writes its own metrics directory; an inherited one would be shared.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        preexec = None if cpus is None else pinned(cpus)
        if log is None:
            out = subprocess.DEVNULL
            self.proc: Process = subprocess.Popen(
                args, stdout=out, stderr=out, env=env, preexec_fn=preexec
            )
        else:
            with log.open("wb") as f:  # the child keeps its own descriptor
                self.proc = subprocess.Popen(
                    args, stdout=f, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec
                )

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.handle_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(self.http + "/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` (a counter's with its ``_total``) on
        the node's /metrics whose labels include ``labels``; 0 when there are none."""
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until /healthz says ok (the registry answers; 503 while it does not)."""
        wait_until(
            lambda: self.health()["status"] == "ok",
            "idnode serve",
            timeout=timeout,
            proc=self.proc,
            log=self.log_path,
        )

    def log_text(self) -> str:
        return log_tail(self.log_path)

    def stop(self, timeout: float = 20.0) -> int:
        return stop(self.proc, timeout)
