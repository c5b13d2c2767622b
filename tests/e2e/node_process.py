"""Real `idnode` processes for the e2e tests: the node itself is the load-test
harness's NodeProcess (idnode.loadtest.processes, one copy for both); what only the
tests need (a fresh registry from `idnode init`, an admin node fixture) is here."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from idnode.loadtest.processes import IDNODE, NodeProcess

__all__ = ["IDNODE", "NodeProcess", "Registry", "admin_node", "init_registry", "run_module"]


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
