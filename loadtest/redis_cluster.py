"""A private Redis Cluster on loopback: N masters with a replica each, for the L2 benchmark
and the tests (tests/redis_cluster.py), started from the system's `redis-server` and
`redis-cli` and stopped with everything it wrote.

    cluster = LocalCluster.start()        # 3 masters + 3 replicas, cluster_state:ok
    tier = RedisClusterTier(cluster.url)  # any node's URL names the cluster
    cluster.kill_master(cluster.master_of("idnode:invalidate"))  # a replica takes over
    cluster.persist(a); cluster.restart(a)  # a master back in place with its AOF
    cluster.freeze(a); cluster.thaw(a)      # SIGSTOP / SIGCONT: silent, no reset
    cluster.stop()

The nodes run as caches (no RDB, no AOF), as docker/scripts/redis-cluster-node ships
them; ``persist`` turns the AOF on for one node, to show what a restarted master holding
old data would do.

The node timeout is short (1 s) so that a killed master is replaced within a few
seconds; a production cluster's is usually 15 s, and its failovers take that long.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from redis.crc import key_slot

from .processes import Process, ProcessError, free_port, pinned, stop, wait_until

NODE_TIMEOUT_MS = 1000


def _binary(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path="/usr/bin:/usr/local/bin")
    if found is None:
        raise ProcessError(f"{name} is not installed (Debian: apt-get install redis-server)")
    return found


def standalone_redis(
    cpus: Iterable[int], prefix: str = "idnode-redis-"
) -> tuple[str, subprocess.Popen[bytes], str]:
    """A throwaway standalone redis-server on loopback (no persistence), pinned to
    ``cpus``: its URL, process and directory (the benchmarks' standalone side)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ProcessError("redis-server is not installed (Debian: apt-get install redis-server)")
    tmp = tempfile.mkdtemp(prefix=prefix)
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
         "no", "--dir", tmp],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=pinned(cpus),
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    wait_until(
        lambda: bool(redis.Redis.from_url(url).ping()),
        f"redis-server on port {port}",
        timeout=20.0,
        proc=proc,
        retry_on=(redis.RedisError, OSError),
    )
    return url, proc, tmp


CLUSTER_BUS_OFFSET = 10000  # a cluster node's bus listens on its port + 10000


@dataclass
class LocalCluster:
    tmp: Path
    procs: dict[str, Process] = field(default_factory=dict)  # "127.0.0.1:PORT" -> process
    argv: dict[str, list[str]] = field(default_factory=dict)  # how each was started
    cpus: list[int] | None = None
    frozen: set[str] = field(default_factory=set)  # stopped by freeze(): not asked

    @classmethod
    def start(
        cls,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = NODE_TIMEOUT_MS,
        cpus: Iterable[int] | None = None,
    ) -> LocalCluster:
        """Start ``masters * (1 + replicas)`` servers (pinned to ``cpus`` if given), join
        them, wait for cluster_state:ok and every replica in sync."""
        server = _binary("redis-server")
        cli = _binary("redis-cli")
        c = cls(Path(tempfile.mkdtemp(prefix="idnode-redis-cluster-")))
        c.cpus = None if cpus is None else list(cpus)
        try:
            for _ in range(masters * (1 + replicas)):
                port = free_port(also=CLUSTER_BUS_OFFSET)  # the bus port must be free too
                address = f"127.0.0.1:{port}"
                c.argv[address] = [
                    server,
                    "--port", str(port),
                    "--bind", "127.0.0.1",
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", f"nodes-{port}.conf",
                    "--cluster-node-timeout", str(node_timeout_ms),
                    "--dir", str(c.tmp),
                    "--save", "",
                    "--appendonly", "no",
                    "--appenddirname", f"aof-{port}",  # the nodes share one directory
                    # A replica that has not synced cannot take over: sync at once.
                    "--repl-diskless-sync-delay", "0",
                    # A replica whose link was down a while (a frozen or restarted
                    # master earlier in a test) still takes over: with the default
                    # factor it may refuse, and the cluster stays down.
                    "--cluster-replica-validity-factor", "0",
                    "--logfile", f"redis-{port}.log",
                ]  # fmt: skip
                c.procs[address] = c._spawn(address)
            for address, proc in c.procs.items():
                wait_until(
                    lambda a=address: bool(c.node(a).ping()),  # type: ignore[misc]
                    f"redis-server {address}",
                    timeout=20.0,
                    proc=proc,
                    log=c.tmp / f"redis-{address.rsplit(':', 1)[1]}.log",
                    retry_on=(redis.RedisError, OSError),
                )
            made = subprocess.run(
                [cli, "--cluster", "create", *c.procs, "--cluster-replicas", str(replicas),
                 "--cluster-yes"],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            if made.returncode != 0:
                raise ProcessError(f"redis-cli --cluster create failed: {made.stdout[-2000:]}")
            c.wait_ok(expect_masters=masters, replicas=replicas)
        except BaseException:
            c.stop()
            raise
        return c

    def _spawn(self, address: str) -> Process:
        return subprocess.Popen(
            self.argv[address],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.tmp,
            preexec_fn=None if self.cpus is None else pinned(self.cpus),
        )

    @property
    def nodes(self) -> list[str]:
        """Every server started, alive or not, as ``127.0.0.1:PORT``."""
        return list(self.procs)

    @property
    def url(self) -> str:
        """A redis:// URL of one living node (any node names the whole cluster)."""
        return f"redis://{self.alive()[0]}/0"

    def alive(self) -> list[str]:
        return [a for a, p in self.procs.items() if p.poll() is None and a not in self.frozen]

    def node(self, address: str) -> redis.Redis:
        host, port = address.rsplit(":", 1)
        return redis.Redis(host=host, port=int(port), socket_timeout=2.0)

    def _topology(self) -> dict[str, dict[str, Any]]:
        """CLUSTER NODES as a living node sees it: address -> flags, slots, connected."""
        for a in self.alive():
            try:
                with self.node(a) as r:
                    return cast("dict[str, dict[str, Any]]", r.execute_command("CLUSTER NODES"))
            except (redis.RedisError, OSError):
                continue
        raise ProcessError("no node of the cluster answers")

    def _up(self, role: str) -> list[tuple[str, dict[str, Any]]]:
        return [
            (a, n)
            for a, n in self._topology().items()
            if role in n["flags"] and "fail" not in n["flags"] and n["connected"]
        ]

    def masters(self) -> list[str]:
        """The masters a living node knows, not failed, as ``127.0.0.1:PORT``."""
        return [a for a, _ in self._up("master")]

    def master_of(self, key: str) -> str:
        """The master serving ``key``'s slot now."""
        slot = key_slot(key.encode())
        for a, n in self._up("master"):
            if any(int(low) <= slot <= int(high) for low, high in n["slots"]):
                return a
        raise ProcessError(f"no master serves slot {slot}")

    def kill_master(self, address: str | None = None, *, wait: bool = True) -> str:
        """SIGKILL a master (by default one the URL does not name), then, with ``wait``,
        wait until its replica has taken over and the cluster is ok again; its address."""
        masters = self.masters()
        if address is None:
            seed = self.url.removeprefix("redis://").removesuffix("/0")
            address = next((m for m in masters if m != seed), masters[0])
        if address not in masters:
            raise ProcessError(f"{address} is not a master of the cluster ({masters})")
        if wait:
            # Only a replica in sync takes over: one still syncing (after an earlier
            # fault) would leave the slots unserved, and the wait below ran out.
            self._wait_replica_online(address)
        proc = self.procs[address]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if wait:
            self.wait_ok(expect_masters=len(masters))
        return address

    def synced_replicas(self, master: str) -> int:
        """How many replicas of ``master`` are in sync (only those can take over)."""
        with self.node(master) as r:
            info = r.info("replication")
        return sum(
            1
            for k, v in info.items()
            if k.startswith("slave") and isinstance(v, dict) and v.get("state") == "online"
        )

    def _wait_replica_online(self, master: str, timeout: float = 60.0) -> None:
        try:
            wait_until(lambda: self.synced_replicas(master) > 0,
                       f"a replica of {master} in sync", timeout=timeout,
                       retry_on=(redis.RedisError, OSError))  # fmt: skip
        except ProcessError as exc:
            raise ProcessError(f"{exc}; {self._links()}") from exc

    def _links(self) -> str:
        """Who replicates whom, as a living node sees it (for a failure's message)."""
        try:
            nodes = self._topology()
        except ProcessError:
            return "no node answers"
        by_id = {n.get("node_id"): a for a, n in nodes.items()}
        return "the nodes as a living node sees them: " + ", ".join(
            f"{a} {'/'.join(sorted(n['flags'].split(',')))}"
            + (f" of {by_id.get(n.get('master_id'), n.get('master_id'))}"
               if n.get("master_id") not in (None, "-") else "")
            + ("" if n["connected"] else " (disconnected)")
            for a, n in sorted(nodes.items())
        )  # fmt: skip

    def persist(self, address: str) -> None:
        """Turn on the AOF of one node (every write synced), as a node with persistence
        runs; :meth:`restart` then brings its data back, however old."""
        with self.node(address) as r:
            r.config_set("appendfsync", "always")
            r.config_set("appendonly", "yes")
            wait_until(
                lambda: _aof_on(r.info("persistence")),
                f"the AOF of {address}",
                timeout=30.0,
                retry_on=(redis.RedisError, OSError),
            )
        self.argv[address] = [*self.argv[address], "--appendonly", "yes"]

    def restart(self, address: str, meanwhile: Callable[[], object] | None = None) -> None:
        """SIGKILL a node and start it again at once on its address (a crashed container
        that ``restart: unless-stopped`` brings back), within the node timeout, before a
        replica can take over; ``meanwhile`` is run while it is down. Returns once it
        answers and says the cluster is ok."""
        proc = self.procs[address]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if meanwhile is not None:
            meanwhile()
        self.procs[address] = new = self._spawn(address)
        wait_until(
            lambda: _cluster_ok(self.node(address)),
            f"redis-server {address} restarted and back in the cluster",
            timeout=20.0,
            proc=new,
            log=self.tmp / f"redis-{address.rsplit(':', 1)[1]}.log",
            retry_on=(redis.RedisError, OSError),
        )

    def freeze(self, address: str) -> None:
        """SIGSTOP a node: its sockets stay open and say nothing (a frozen VM, a network
        partition), so its clients get no reset. :meth:`thaw` lets it go on."""
        self.procs[address].send_signal(signal.SIGSTOP)
        self.frozen.add(address)

    def thaw(self, address: str) -> None:
        self.procs[address].send_signal(signal.SIGCONT)
        self.frozen.discard(address)

    def wait_ok(self, *, expect_masters: int, replicas: int = 0, timeout: float = 60.0) -> None:
        """Until every living node says cluster_state:ok and sees ``expect_masters`` masters
        (and, at the start, every replica attached)."""

        def ok() -> bool:
            for a in self.alive():
                with self.node(a) as r:
                    if r.execute_command("CLUSTER INFO").get("cluster_state") != "ok":
                        return False
            masters, slaves = self._up("master"), self._up("slave")
            if len(masters) != expect_masters or len(slaves) < expect_masters * replicas:
                return False
            # each replica in sync (only a synced one can take over)
            return all(self.synced_replicas(a) >= replicas for a, _ in masters)

        try:
            wait_until(ok, "redis cluster state ok", timeout=timeout,
                       retry_on=(redis.RedisError, OSError))  # fmt: skip
        except ProcessError as exc:
            raise ProcessError(f"{exc}; {self._links()}") from exc

    def stop(self) -> None:
        try:
            for proc in self.procs.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGCONT)  # a frozen node cannot stop
                stop(proc, 10)
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _cluster_ok(r: redis.Redis) -> bool:
    with r:
        info = r.execute_command("CLUSTER INFO")  # type: ignore[no-untyped-call]
        return bool(info.get("cluster_state") == "ok")


def _aof_on(info: dict[str, Any]) -> bool:
    return (
        int(info.get("aof_enabled", 0)) == 1
        and int(info.get("aof_rewrite_in_progress", 1)) == 0
        and int(info.get("aof_rewrite_scheduled", 1)) == 0
    )
