"""Run a real `idnode serve` process on free loopback ports for a test."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from tests.services import free_port

IDNODE = shutil.which("idnode") or str(Path(sys.executable).parent / "idnode")


class NodeProcess:
    def __init__(
        self,
        database_url: str,
        *,
        redis_url: str = "",
        namespace: str = "idnode",
        workers: int = 1,
        extra: tuple[str, ...] = (),
        log: Path | None = None,
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
            "--redis-namespace",
            namespace,
            "--shutdown-grace",
            "3",
            *extra,
        ]
        if redis_url:
            args += ["--redis-url", redis_url]
        self._log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=self._log, env=env)

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.handle_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(self.http + "/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"idnode serve exited with {self.proc.returncode}: {self.log_text()}"
                )
            try:
                if self.health()["status"] == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"idnode serve not ready in {timeout}s: {self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path else ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not subprocess.DEVNULL:
            self._log.close()  # type: ignore[union-attr]
        return int(self.proc.returncode)


class Registry(NamedTuple):
    url: str  # database URL
    key: str  # node key file (seals HS_SECKEY values)
    output: str  # what `idnode init` printed


def init_registry(
    tmp_path: Path, name: str, *init_args: str, database_url: str | None = None
) -> Registry:
    """`idnode init --prefix 88.166 [init_args]` on a fresh embedded registry (or on
    ``database_url``), with its own node key file; fails the test if init fails."""
    url = database_url or f"sqlite:///{tmp_path}/{name}.db"
    key = str(tmp_path / f"{name}.key")
    p = subprocess.run(
        [
            IDNODE,
            "init",
            "--prefix",
            "88.166",
            *init_args,
            "--database-url",
            url,
            "--secret-key-file",
            key,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr
    return Registry(url, key, p.stdout)


def admin_node(
    tmp_path: Path, name: str, secret: str, redis_url: str, namespace: str
) -> Iterator[NodeProcess]:
    """For a fixture: a registry with the prefix admin ``300:0.NA/88.166`` (secret key
    ``secret``), and a node serving it with Redis; stopped cleanly afterwards."""
    db, key, _ = init_registry(tmp_path, name, "--admin-secret", secret)
    n = NodeProcess(
        db,
        redis_url=redis_url,
        namespace=namespace,
        log=tmp_path / f"{name}.log",
        extra=("--secret-key-file", key),
    )
    n.wait_ready()
    yield n
    assert n.stop() == 0, n.log_text()


def run_module(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``python -m`` with this interpreter (the benchmarks), output captured."""
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
