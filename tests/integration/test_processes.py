"""The process helpers the load-test harness and the tests share (idnode.loadtest.processes),
against real processes, sockets and Redis."""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import redis

from idnode.loadtest.processes import (
    ProcessError,
    clear_namespace,
    free_port,
    stop,
    wait_log_line,
    wait_port,
)


def python(code: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-u", "-c", code], stdout=out, stderr=subprocess.STDOUT
        )


def test_a_free_port_is_free_for_tcp_and_udp() -> None:
    port = free_port()
    with socket.socket() as t, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        t.bind(("127.0.0.1", port))
        u.bind(("127.0.0.1", port))


def test_a_wait_ends_when_the_line_appears(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    proc = python("import time; time.sleep(0.3); print('serving'); time.sleep(30)", log)
    try:
        wait_log_line(log, "serving", proc=proc, timeout=20)
        assert "serving" in log.read_text()
    finally:
        stop(proc)


def test_a_wait_fails_at_once_with_the_log_when_the_process_exits(tmp_path: Path) -> None:
    log = tmp_path / "dies.log"
    proc = python("print('no registry here'); raise SystemExit(3)", log)
    started = time.monotonic()
    with pytest.raises(ProcessError) as failed:
        wait_log_line(log, "serving", proc=proc, timeout=30)
    assert time.monotonic() - started < 10  # not the whole timeout
    assert "exited with 3" in str(failed.value) and "no registry here" in str(failed.value)


def test_a_port_wait_gives_up_after_its_timeout() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(ProcessError, match=f"tcp/{port}: not within"):
        wait_port(port, timeout=0.5)


def test_stop_terminates_and_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    polite = python("import time; time.sleep(30)", tmp_path / "polite.log")
    assert stop(polite) == -15  # SIGTERM
    stubborn = python(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('ready'); time.sleep(30)",
        tmp_path / "stubborn.log",
    )
    wait_log_line(tmp_path / "stubborn.log", "ready", proc=stubborn, timeout=20)
    assert stop(stubborn, timeout=0.5) == -9  # SIGKILL after the timeout


def test_clearing_a_namespace_deletes_its_keys_and_no_others(redis_url: str) -> None:
    ns, other = f"idnode-test-{secrets.token_hex(4)}", f"idnode-test-{secrets.token_hex(4)}"
    r = redis.Redis.from_url(redis_url)
    try:
        r.mset({f"{ns}:h:{i}": b"x" for i in range(6000)})  # more than one batch
        r.set(f"{other}:h:1", b"y")
        r.set(ns, b"no colon: not in the namespace")
        assert clear_namespace(redis_url, ns) == 6000
        assert not list(r.scan_iter(match=f"{ns}:*", count=1000))
        assert r.get(f"{other}:h:1") == b"y" and r.get(ns) is not None
    finally:
        r.delete(f"{other}:h:1", ns)
        r.close()
