"""The topology of docker/compose.cluster.yaml as processes on loopback: a six-node Redis
Cluster (three masters, a replica each), a PostgreSQL primary with a streaming replica,
`idnode init` on the primary, and N `idnode serve` nodes configured from
docker/cluster.env, the environment the compose file gives its nodes.

    with Topology.start(nodes=3, admin_secret="S3cret") as t:
        t.nodes[0].http, t.nodes[1].handle_port   # each node on its own loopback ports
        t.cluster.kill_master()                   # LocalCluster (loadtest/redis_cluster.py)
        t.pg.pause_replay(); t.pg.resume_replay() # ReplicatedPostgres (loadtest/pg_replica.py)
        t.kill_node(2)                            # SIGKILL, as a crashed container

cluster.env is read as compose reads an env_file (KEY=VALUE, no quoting); the service
addresses in its URLs (pg-primary:5432, pg-replica:5432, redis-1:6379) become the local
servers' addresses, IDNODE_LISTEN becomes 127.0.0.1 (nothing here listens elsewhere) and
IDNODE_SECRET_KEY_FILE the key file `idnode init` writes, shared by every node as the
compose file's idnode-key volume is. The database role and database the URL names are
made on the primary first, as the postgres image makes POSTGRES_USER and POSTGRES_DB.
The nodes get their settings through IDNODE_* variables only, plus their ports.

Every phase is bounded: a server that does not come up stops the start with a
TopologyError naming it and the tail of its log, and everything started is stopped.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import tempfile
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from .pg_replica import ReplicatedPostgres, start_replicated_postgres
from .processes import (
    IDNODE,
    Process,
    ProcessError,
    free_port,
    log_tail,
    pinned,
    stop,
    wait_until,
)
from .redis_cluster import LocalCluster

__all__ = ["Topology", "TopologyError", "TopologyNode", "cluster_env", "localize"]

# docker/cluster.env of a checkout (loadtest/ is a top-level folder beside docker/).
CLUSTER_ENV = Path(__file__).resolve().parents[1] / "docker" / "cluster.env"
PREFIX = "88.166"  # what compose's idnode-init homes by default (IDNODE_PREFIX)
NODE_START_TIMEOUT = 60.0  # seconds for a node's /healthz to say ok
INIT_TIMEOUT = 120.0


class TopologyError(ProcessError):
    """A part of the topology did not start, or cluster.env names what is not started."""


# --- cluster.env ------------------------------------------------------------------------


def cluster_env(path: Path | None = None) -> dict[str, str]:
    """``KEY=VALUE`` lines of an env_file as compose reads them (comments and blank lines
    skipped, no quoting, no expansion)."""
    source = path or CLUSTER_ENV
    if not source.exists():
        raise TopologyError(
            f"{source} not found: the topology reads the compose cluster's settings from "
            "docker/cluster.env of a checkout (give env_file= / --env-file)"
        )
    out: dict[str, str] = {}
    for n, line in enumerate(source.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.partition("=")
        if not eq or not key.startswith("IDNODE_"):
            raise TopologyError(f"{source}:{n}: not an IDNODE_KEY=VALUE line: {line!r}")
        out[key] = value
    return out


def localize(env: Mapping[str, str], services: Mapping[str, str], key_file: str) -> dict[str, str]:
    """cluster.env's settings for nodes on loopback: each ``host:port`` of ``services``
    replaced by its local address, the listen address loopback, the key file ours. A URL
    still naming a host other than 127.0.0.1 afterwards is an error (a service the
    loopback topology does not start: the test would silently not test it)."""
    out: dict[str, str] = {}
    for key, value in env.items():
        for service, local in services.items():
            value = value.replace(f"@{service}/", f"@{local}/").replace(
                f"//{service}/", f"//{local}/"
            )
        out[key] = value
    out["IDNODE_LISTEN"] = "127.0.0.1"
    out["IDNODE_SECRET_KEY_FILE"] = key_file
    for key, value in out.items():
        for url in value.split(","):
            if "://" in url and urlsplit(url).hostname not in ("127.0.0.1", None):
                raise TopologyError(
                    f"cluster.env {key}={env[key]} names {urlsplit(url).hostname}, which the "
                    f"loopback topology does not start (it starts {', '.join(services)})"
                )
    return out


# --- a node -----------------------------------------------------------------------------


class TopologyNode:
    """One `idnode serve` configured by environment only (as a compose service is), on
    its own free loopback ports; the same surface as processes.NodeProcess."""

    def __init__(
        self, index: int, env: Mapping[str, str], log: Path, cpus: Iterable[int] | None = None
    ) -> None:
        self.index = index
        self.handle_port, self.http_port, self.grpc_port = free_port(), free_port(), free_port()
        self.log_path = log
        self.env = dict(env) | {
            "IDNODE_HANDLE_PORT": str(self.handle_port),
            "IDNODE_HTTP_PORT": str(self.http_port),
            "IDNODE_GRPC_PORT": str(self.grpc_port),
        }
        # Nothing inherited may change the node's settings: only cluster.env's (and ours).
        base = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
        base.pop("PROMETHEUS_MULTIPROC_DIR", None)  # each node writes its own
        with log.open("wb") as f:  # the child keeps its own descriptor
            self.proc: Process = subprocess.Popen(
                [IDNODE, "serve"],
                stdout=f,
                stderr=subprocess.STDOUT,
                env=base | self.env | {"PYTHONUNBUFFERED": "1"},
                preexec_fn=None if cpus is None else pinned(cpus),
            )

    @property
    def server(self) -> str:
        return f"127.0.0.1:{self.handle_port}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def health(self) -> dict[str, object]:
        import json

        with urllib.request.urlopen(self.http + "/healthz", timeout=2) as r:
            return dict(json.loads(r.read()))

    def wait_ready(self, timeout: float = NODE_START_TIMEOUT) -> None:
        try:
            wait_until(
                lambda: self.health()["status"] == "ok",
                f"idnode serve (node {self.index})",
                timeout=timeout,
                proc=self.proc,
                log=self.log_path,
            )
        except ProcessError as exc:
            raise TopologyError(str(exc)) from exc

    def metrics(self) -> str:
        with urllib.request.urlopen(self.http + "/metrics", timeout=5) as r:
            return str(r.read().decode())

    def log_text(self) -> str:
        return log_tail(self.log_path)

    def kill(self) -> None:
        """SIGKILL, as a container that dies: no drain, nothing flushed."""
        if self.alive:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 20.0) -> int:
        return stop(self.proc, timeout)


# --- the topology -----------------------------------------------------------------------


@dataclass
class Topology:
    tmp: Path
    cluster: LocalCluster | None = None
    pg: ReplicatedPostgres | None = None
    env: dict[str, str] = field(default_factory=dict)  # what every node is given
    nodes: list[TopologyNode] = field(default_factory=list)
    init_output: str = ""

    @classmethod
    def start(
        cls,
        nodes: int = 3,
        *,
        admin_secret: str = "",
        partitions: int = 0,
        env_file: Path | None = None,
        overrides: Mapping[str, str] | None = None,
        server_cpus: Iterable[int] | None = None,
        engine_cpus: Iterable[int] | None = None,
    ) -> Topology:
        """Start the engines, init the registry (prefix 88.166, with the admin
        ``300:0.NA/88.166`` when ``admin_secret`` is given; ``--partitions`` when
        ``partitions``) and ``nodes`` nodes, each ready. ``overrides`` are IDNODE_*
        settings laid over cluster.env's (for a load test: workers, log level)."""
        settings = cluster_env(env_file)  # read first: a bad file costs no server start
        t = cls(Path(tempfile.mkdtemp(prefix="idnode-topology-")))
        engines = None if engine_cpus is None else list(engine_cpus)
        try:
            try:
                t.cluster = LocalCluster.start(masters=3, replicas=1, cpus=engines)
            except ProcessError as exc:
                raise TopologyError(f"the six-node Redis Cluster did not start: {exc}") from exc
            try:
                t.pg = start_replicated_postgres()
            except ProcessError as exc:
                raise TopologyError(
                    f"the PostgreSQL primary and replica did not start: {exc}"
                ) from exc
            redis_seed = t.cluster.url.removeprefix("redis://").removesuffix("/0")
            services = {
                "pg-primary:5432": f"127.0.0.1:{t.pg.primary_port}",
                "pg-replica:5432": f"127.0.0.1:{t.pg.replica_port}",
                "redis-1:6379": redis_seed,
            }
            t.env = localize(settings, services, str(t.tmp / "idnode-secret.key"))
            t.env.update(overrides or {})
            t._make_database()
            t._init(admin_secret, partitions)
            cpus = None if server_cpus is None else list(server_cpus)
            for _ in range(nodes):
                t.add_node(cpus=cpus, wait=False)
            for n in t.nodes:
                n.wait_ready()
        except BaseException:
            t.stop()
            raise
        return t

    # --- parts of the start ---------------------------------------------------------------

    @property
    def database_url(self) -> str:
        return self.env["IDNODE_DATABASE_URL"]

    @property
    def replica_urls(self) -> list[str]:
        """The read replicas as the nodes name them (the label of their metrics)."""
        return [u for u in self.env.get("IDNODE_DATABASE_READ_URL", "").split(",") if u]

    def _make_database(self) -> None:
        """The role and database cluster.env's database URL names, on the primary (the
        postgres image's POSTGRES_USER, a superuser, and POSTGRES_DB), replayed on the
        replica before any node looks for them there."""
        assert self.pg is not None
        url = urlsplit(self.database_url)
        user, db = url.username or "postgres", url.path.lstrip("/") or "postgres"
        if user != "postgres":
            self.pg.sql(self.pg.primary_url, f'CREATE ROLE "{user}" LOGIN SUPERUSER')
        if db != "postgres":
            self.pg.sql(self.pg.primary_url, f'CREATE DATABASE "{db}" OWNER "{user}"')

    def _init(self, admin_secret: str, partitions: int) -> None:
        """`idnode init` as compose's idnode-init service runs it: environment only."""
        assert self.pg is not None
        args = [IDNODE, "init", "--prefix", PREFIX]
        if admin_secret:
            args += ["--admin-secret", admin_secret]
        if partitions:
            args += ["--partitions", str(partitions)]
        base = {k: v for k, v in os.environ.items() if not k.startswith("IDNODE_")}
        try:
            p = subprocess.run(
                args,
                env=base | self.env,
                capture_output=True,
                text=True,
                timeout=INIT_TIMEOUT,
                check=False,
                cwd=self.tmp,
            )
        except subprocess.TimeoutExpired as exc:
            raise TopologyError(f"idnode init: not done within {INIT_TIMEOUT:g} s") from exc
        if p.returncode != 0:
            raise TopologyError(f"idnode init failed (exit {p.returncode}): {p.stderr[-2000:]}")
        self.init_output = p.stdout
        self.pg.wait_replayed()  # the schema on the replica before a node reads there

    def add_node(self, *, cpus: Iterable[int] | None = None, wait: bool = True) -> TopologyNode:
        """One more node with the shared settings, on its own ports."""
        i = len(self.nodes)
        node = TopologyNode(i, self.env, self.tmp / f"node-{i}.log", cpus)
        self.nodes.append(node)
        if wait:
            node.wait_ready()
        return node

    # --- what a test or a load test does --------------------------------------------------

    def alive(self) -> list[TopologyNode]:
        return [n for n in self.nodes if n.alive]

    def kill_node(self, i: int) -> TopologyNode:
        """SIGKILL node ``i`` (the others go on); the node."""
        self.nodes[i].kill()
        return self.nodes[i]

    def stop(self) -> None:
        """Every node, then the engines; the temporary directory removed. Each part is
        stopped even when stopping one before it failed (that error is raised after)."""
        parts: list[Callable[[], object]] = [functools.partial(n.stop, 10) for n in self.nodes]
        if self.cluster is not None:
            parts.append(self.cluster.stop)
        if self.pg is not None:
            parts.append(self.pg.stop)
        first: BaseException | None = None
        for part in parts:
            try:
                part()
            except BaseException as exc:  # stop the rest; raised after
                first = first or exc
        shutil.rmtree(self.tmp, ignore_errors=True)
        if first is not None:
            raise first

    def __enter__(self) -> Topology:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
