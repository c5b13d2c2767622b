"""Only one node on a port, and no worker outlives its supervisor (issue 12).

Before: a second `idnode serve` on the same ports started and shared them
(SO_REUSEPORT), so clients got answers from either registry at random; kill -9 of the
supervisor left its workers serving with parent 1, and a restart bound beside them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from idnode.loadtest.processes import IDNODE
from tests.e2e.node_process import NodeProcess, init_registry

from .nodes import alive, children, registry_with_big_handle, served_correctly


def _ports(n: NodeProcess) -> list[str]:
    return [
        "--listen",
        "127.0.0.1",
        "--handle-port",
        str(n.handle_port),
        "--http-port",
        str(n.http_port),
        "--grpc-port",
        str(n.grpc_port),
    ]


def test_a_second_node_on_the_same_ports_exits_2_naming_the_port(tmp_path: Path) -> None:
    url, first_key = registry_with_big_handle(tmp_path, "first")
    first = NodeProcess(
        url, workers=2, extra=("--secret-key-file", first_key), log=tmp_path / "first.log"
    )
    other, key, _ = init_registry(tmp_path, "other")  # another registry, as in the issue
    try:
        first.wait_ready()
        for workers in ("1", "2"):
            try:
                second = subprocess.run(
                    [
                        *(IDNODE, "serve", "--database-url", other, "--secret-key-file", key),
                        *_ports(first),
                        *("--workers", workers),
                    ],
                    capture_output=True,
                    text=True,
                    timeout=30,
                    check=False,
                    cwd=tmp_path,
                )
            except subprocess.TimeoutExpired as exc:
                raise AssertionError(f"a second node kept serving the ports: {exc}") from None
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr
            assert str(first.handle_port) in lines[0] and "in use" in lines[0], lines
        # the first node still answers from its own registry, on every door
        served_correctly(first)
    finally:
        assert first.stop() == 0, first.log_text()


def _workers(supervisor: int) -> list[int]:
    out = []
    for pid in children(supervisor):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:  # the spawn context's helper, not a worker
            out.append(pid)
    return out


def test_workers_die_with_their_supervisor_and_a_restart_binds(tmp_path: Path) -> None:
    url, key = registry_with_big_handle(tmp_path, "node")
    n = NodeProcess(url, workers=2, extra=("--secret-key-file", key), log=tmp_path / "node.log")
    restarted: NodeProcess | None = None
    workers: list[int] = []
    try:
        n.wait_ready()
        workers = _workers(n.proc.pid)
        assert len(workers) == 2, workers
        n.proc.send_signal(signal.SIGKILL)
        n.proc.wait()
        deadline = time.monotonic() + 60  # generous: a worker may finish its requests
        while time.monotonic() < deadline and any(alive(w) for w in workers):
            time.sleep(0.2)
        assert not [w for w in workers if alive(w)], f"orphaned workers: {n.log_text()}"
        # a node started on the same ports now has them to itself
        restarted = NodeProcess(
            url,
            workers=2,
            extra=("--secret-key-file", key, *_ports(n)),
            log=tmp_path / "restarted.log",
        )
        assert restarted.handle_port != n.handle_port  # its own picks, overridden by extra
        restarted.handle_port, restarted.http_port = n.handle_port, n.http_port
        restarted.grpc_port = n.grpc_port
        restarted.wait_ready()
        served_correctly(restarted)
    finally:
        for w in workers:  # never leave an orphan behind, whatever failed
            if alive(w):
                os.kill(w, signal.SIGKILL)
        n.stop()
        if restarted is not None:
            assert restarted.stop() == 0, restarted.log_text()
