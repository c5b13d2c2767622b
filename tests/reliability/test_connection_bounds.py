"""A hostile client on the TCP and HTTP ports cannot grow the node's memory or hold its
descriptors, and well-behaved clients keep being answered (issue 12).

Each attack comes from 127.0.0.2 (the per-client caps count it apart from the
well-behaved client on 127.0.0.1), scaled down from the issue's figures with lower
timeouts and caps given as flags. The node's memory is the resident size of its
process and workers, sampled while the attack runs; bounds, never times, are asserted.
"""

from __future__ import annotations

import resource
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from idnode.resolver.client import resolution_request
from idnode.resolver.codec import encode
from tests.e2e.node_process import NodeProcess

from .nodes import BIG, node_rss_mib, registry_with_big_handle, served_correctly

ATTACKER = "127.0.0.2"


@contextmanager
def node_with(tmp_path: Path, *flags: str, workers: int = 1) -> Iterator[NodeProcess]:
    url, key = registry_with_big_handle(tmp_path, "reg")
    n = NodeProcess(
        url, workers=workers, extra=("--secret-key-file", key, *flags), log=tmp_path / "node.log"
    )
    try:
        n.wait_ready()
        served_correctly(n)  # warm: every door has answered once before the baseline
        yield n
    finally:
        assert n.stop() == 0, n.log_text()


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    return socket.create_connection(
        ("127.0.0.1", port), timeout=timeout, source_address=(ATTACKER, 0)
    )


def peak_rss(node: NodeProcess, until: Callable[[], bool], limit: float) -> float:
    """The node's largest resident size (MiB) seen until ``until()`` or ``limit`` s."""
    peak = node_rss_mib(node)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and not until():
        peak = max(peak, node_rss_mib(node))
        time.sleep(0.1)
    return max(peak, node_rss_mib(node))


def closed_by_node(socks: list[socket.socket]) -> Callable[[], bool]:
    """A check: have all ``socks`` been closed by the other end (EOF or reset)?
    Reads and drops what they were sent."""
    open_ = {s.fileno(): s for s in socks}
    poller = select.poll()
    for fd in open_:
        poller.register(fd, select.POLLIN)

    def check() -> bool:
        while open_:
            ready = poller.poll(0)
            if not ready:
                return False
            for fd, _event in ready:
                s = open_[fd]
                try:
                    gone = not s.recv(1 << 20)
                except OSError:
                    gone = True
                if gone:
                    poller.unregister(fd)
                    del open_[fd]
        return True

    return check


def wait_for(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} (not within {limit:g} s)")


def test_a_pipelining_client_that_never_reads_is_held_back(tmp_path: Path) -> None:
    """Issue: 10,000 lookups of a 64 KB handle, answers never read: 99 MB -> 697 MB."""
    requests = 3000  # answers of about 190 MB if the node queued them all
    with node_with(tmp_path, "--tcp-slow-timeout", "3") as n:
        base = node_rss_mib(n)
        attacker = connect(n.handle_port, timeout=20)
        attacker.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        attacker.sendall(b"".join(encode(resolution_request(BIG)) for _ in range(requests)))
        served_correctly(n)  # while the attacker's answers pile up unread
        # sampled past the slow timeout (reading here would be reading the answers)
        peak = peak_rss(n, lambda: False, 8)
        served_correctly(n)
        assert peak - base < 60, f"RSS {base:.0f} -> {peak:.0f} MiB"
        # the node hangs up on a client that does not read: what it sent is far less
        # than everything asked for
        received = 0
        try:
            attacker.settimeout(20)
            while chunk := attacker.recv(1 << 20):
                received += len(chunk)
        except OSError:
            pass
        assert received < requests * 64_000 // 2, received
        attacker.close()


def test_unfinished_tcp_requests_are_bounded_and_timed_out(tmp_path: Path) -> None:
    """Issue: 1,500 connections each holding an unfinished 256 KB frame: +382 MB."""
    conns = 500  # about 128 MB if every unfinished frame were held
    length = 262_144
    head = struct.pack(">BBHIIII", 2, 10, 0, 0, 1, 0, length)  # an envelope, message to come
    part = b"\0" * (length - 1024)
    with node_with(
        tmp_path,
        "--conns-per-client",
        "100",
        "--tcp-buffer-max-mb",
        "16",
        "--tcp-slow-timeout",
        "3",
    ) as n:
        base = node_rss_mib(n)
        socks = []
        for _ in range(conns):
            s = connect(n.handle_port)
            with suppress(OSError):  # closed at once: over the per-client cap or the budget
                s.sendall(head + part)
            socks.append(s)
        served_correctly(n)
        peak = peak_rss(n, closed_by_node(socks), 20)
        assert peak - base < 48, f"RSS {base:.0f} -> {peak:.0f} MiB"
        wait_for(closed_by_node(socks), 20, "the node closes every unfinished request")
        served_correctly(n)
        for s in socks:
            s.close()
        assert "limit reached: tcp" in n.log_text()


def test_http_bodies_just_short_of_the_limit_are_bounded(tmp_path: Path) -> None:
    """Issue: 500 tunnel POSTs stopping just short of 1 MB: +914 MB, kept after close."""
    posts = 150  # about 270 MB before the fix
    size = 1024 * 1024
    with node_with(tmp_path, "--http-body-max-mb", "16", "--http-body-timeout", "3") as n:
        base = node_rss_mib(n)
        head = (
            f"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-hdl-message\r\n"
            f"Content-Length: {size}\r\n\r\n"
        ).encode()
        body = b"\0" * (size - 1)
        socks = []
        for _ in range(posts):
            s = connect(n.http_port)
            with suppress(OSError):  # refused with 503 and closed while still sending
                s.sendall(head + body)
            socks.append(s)
        served_correctly(n)
        peak = peak_rss(n, closed_by_node(socks), 20)
        assert peak - base < 64, f"RSS {base:.0f} -> {peak:.0f} MiB"
        wait_for(closed_by_node(socks), 20, "the node closes every unfinished body")
        for s in socks:
            s.close()
        after = peak_rss(n, lambda: False, 1)  # and the memory is not kept after close
        served_correctly(n)
        assert after - base < 64, f"RSS {base:.0f} -> {after:.0f} MiB after close"


def test_slowloris_does_not_lock_clients_out(tmp_path: Path) -> None:
    """Issue: 5,000 HTTP connections sending a byte every 10 s are never closed; at a
    descriptor limit of 1,024, 1,100 of them lock out every client and /healthz."""
    conns = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # the node inherits 1,024
    try:
        ctx = node_with(tmp_path, "--http-idle-timeout", "3", "--conns-per-client", "200")
        n = ctx.__enter__()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        socks = []
        for _ in range(conns):
            s = connect(n.http_port)
            with suppress(OSError):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        served_correctly(n)  # TCP, HTTP and /healthz while 1,100 heads trickle in
        done = closed_by_node(socks)
        deadline = time.monotonic() + 30
        while not done() and time.monotonic() < deadline:
            for s in socks:  # a byte now and then, as slowloris does
                with suppress(OSError):
                    s.send(b"X")
            time.sleep(0.5)
        assert done(), "slow HTTP heads are still open"
        served_correctly(n)
        for s in socks:
            s.close()
        log = (tmp_path / "node.log").read_text()
        assert "descriptor limit raised from 1024" in log
        # refusals are summarised, not one line each
        assert 0 < log.count("limit reached") < 20, log[-3000:]
    finally:
        ctx.__exit__(None, None, None)
