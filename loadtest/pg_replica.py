"""A private PostgreSQL primary with one streaming read replica, on loopback, for tests
and for the cluster load test (loadtest/topology.py).

    pg = start_replicated_postgres()
    pg.primary_url, pg.replica_url        # database ``postgres`` on each
    pg.pause_replay() / pg.resume_replay() # the replica stops / goes on applying WAL
    pg.stop_replica() / pg.start_replica() # the replica's server goes away / comes back
    pg.wait_replayed()                     # until the replica has applied all the primary wrote
    pg.stop()                              # both servers stopped, their files removed

The primary is initdb'd with ``wal_level=replica``; the replica is ``pg_basebackup -R -X
stream`` of it (so it streams from the primary's WAL senders) started on another port.
Both trust local connections (user ``postgres``), listen on 127.0.0.1 only and run with
fsync off: data of a test only. Databases created on the primary appear on the replica
once replayed. Control statements go through ``psql`` so that the helper works from
synchronous tests and from tests that run their own event loop alike.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from .processes import ProcessError, free_port, wait_until

__all__ = ["ReplicatedPostgres", "ServiceUnavailable", "start_replicated_postgres"]


class ServiceUnavailable(ProcessError):
    """A server of the pair could not be started, or a control statement failed."""


def _pg_binary(name: str) -> str | None:
    """PATH's, else PostgreSQL's usual /usr/lib/postgresql/*/bin, else the pgserver wheel's
    (the order tests/services.py looks in; IDNODE_TEST_IGNORE_SYSTEM_SERVERS=1 skips the
    system's, to test the wheel)."""
    if os.environ.get("IDNODE_TEST_IGNORE_SYSTEM_SERVERS") != "1":
        found = shutil.which(name)
        if found:
            return found
        for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
            return path
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        return None
    wheel = Path(next(iter(spec.submodule_search_locations))) / "pginstall/bin" / name
    return str(wheel) if wheel.exists() else None


START_TIMEOUT = 60.0  # seconds for a server to start or the replica to stream


class ReplicatedPostgres:
    """Two servers: the primary and its streaming replica (see the module docstring)."""

    def __init__(self) -> None:
        binaries = {n: _pg_binary(n) for n in ("initdb", "pg_ctl", "pg_basebackup", "psql")}
        missing = [n for n, path in binaries.items() if path is None]
        if missing:
            raise ServiceUnavailable(
                f"a PostgreSQL primary with a replica needs {', '.join(missing)} "
                "(Debian: apt-get install postgresql)"
            )
        self._bin = {n: str(path) for n, path in binaries.items()}
        self.tmp = Path(tempfile.mkdtemp(prefix="idnode-test-pg-replica-"))
        self.primary_data, self.replica_data = self.tmp / "primary", self.tmp / "replica"
        self.sock = self.tmp / "sock"
        self.sock.mkdir()
        # PostgreSQL refuses to run as root: its commands run as postgres when we are root.
        self._as: list[str] = []
        if os.geteuid() == 0:
            if shutil.which("runuser") is None:
                raise ServiceUnavailable("running as root needs runuser to start PostgreSQL")
            shutil.chown(self.tmp, "postgres")
            shutil.chown(self.sock, "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self.primary_port = free_port()
        self.replica_port = free_port()
        self.primary_url = f"postgresql://postgres@127.0.0.1:{self.primary_port}/postgres"
        self.replica_url = f"postgresql://postgres@127.0.0.1:{self.replica_port}/postgres"
        self._replica_up = False

    # --- starting ----------------------------------------------------------------------

    def _run(self, *args: str, what: str) -> str:
        p = subprocess.run(
            [*self._as, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if p.returncode != 0:
            raise ServiceUnavailable(f"{what} failed (exit {p.returncode}): {p.stderr.strip()}")
        return p.stdout

    def _opts(self, port: int) -> str:
        return (
            f"-p {port} -k {self.sock} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c full_page_writes=off -c wal_level=replica -c max_wal_senders=4"
            " -c hot_standby=on -c wal_receiver_status_interval=1s"
        )

    def _pg_ctl_start(self, data: Path, port: int, log: str) -> None:
        self._run(
            self._bin["pg_ctl"],
            "-D",
            str(data),
            "-o",
            self._opts(port),
            "-l",
            str(self.tmp / log),
            "-w",
            "-t",
            str(int(START_TIMEOUT)),
            "start",
            what=f"pg_ctl start ({data.name})",
        )

    def _start(self) -> None:
        self._run(
            self._bin["initdb"],
            "-D",
            str(self.primary_data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
            what="initdb of the primary",
        )
        self._pg_ctl_start(self.primary_data, self.primary_port, "primary.log")
        self._run(
            self._bin["pg_basebackup"],
            "-h",
            "127.0.0.1",
            "-p",
            str(self.primary_port),
            "-U",
            "postgres",
            "-D",
            str(self.replica_data),
            "-R",  # standby.signal and primary_conninfo: a streaming standby
            "-X",
            "stream",
            "--no-sync",
            what="pg_basebackup of the primary",
        )
        self.start_replica()

    def start_replica(self) -> None:
        """Start the replica's server (again) and wait until it streams from the primary."""
        self._pg_ctl_start(self.replica_data, self.replica_port, "replica.log")
        self._replica_up = True
        self.wait_streaming()

    def wait_streaming(self) -> None:
        wait_until(
            lambda: (
                self.sql(self.replica_url, "SELECT pg_is_in_recovery()") == "t"
                and self.sql(
                    self.primary_url,
                    "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
                )
                != "0"
            ),
            "the replica streaming from the primary",
            timeout=START_TIMEOUT,
            retry_on=(ServiceUnavailable, OSError),
            log=self.tmp / "replica.log",
        )

    # --- what a test does --------------------------------------------------------------

    def sql(self, url: str, statement: str) -> str:
        """One statement through psql; its single value as text (``t``/``f`` for booleans)."""
        p = subprocess.run(
            [self._bin["psql"], url, "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", statement],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if p.returncode != 0:
            raise ServiceUnavailable(f"psql {statement!r}: {p.stderr.strip()}")
        return p.stdout.strip()

    def pause_replay(self) -> None:
        """The replica keeps receiving WAL but applies none of it: it serves what it had."""
        self.sql(self.replica_url, "SELECT pg_wal_replay_pause()")
        wait_until(
            lambda: (
                self.sql(self.replica_url, "SELECT pg_get_wal_replay_pause_state()") == "paused"
            ),
            "replay paused on the replica",
            timeout=START_TIMEOUT,
            retry_on=(ServiceUnavailable,),
        )

    def resume_replay(self) -> None:
        self.sql(self.replica_url, "SELECT pg_wal_replay_resume()")

    def primary_position(self) -> str:
        return self.sql(self.primary_url, "SELECT pg_current_wal_insert_lsn()")

    def wait_replayed(self, position: str | None = None) -> None:
        """Until the replica has applied the primary's WAL up to ``position`` (its current
        position when not given)."""
        target = position or self.primary_position()
        wait_until(
            lambda: (
                self.sql(self.replica_url, f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")
                == "t"
            ),
            f"the replica replaying up to {target}",
            timeout=START_TIMEOUT,
            retry_on=(ServiceUnavailable,),
        )

    def stop_replica(self) -> None:
        """Stop the replica's server at once (as if it had died)."""
        if self._replica_up:
            self._pg_ctl_stop(self.replica_data)
            self._replica_up = False

    def _pg_ctl_stop(self, data: Path) -> None:
        subprocess.run(
            [*self._as, self._bin["pg_ctl"], "-D", str(data), "-m", "immediate", "-w", "stop"],
            capture_output=True,
            timeout=60,
            check=False,
        )

    def stop(self) -> None:
        """Both servers stopped and their directory removed."""
        self.stop_replica()
        self._pg_ctl_stop(self.primary_data)
        shutil.rmtree(self.tmp, ignore_errors=True)


def start_replicated_postgres() -> ReplicatedPostgres:
    """A started primary and streaming replica (ServiceUnavailable if they cannot be)."""
    pg = ReplicatedPostgres()
    try:
        pg._start()
    except BaseException:
        pg.stop()
        raise
    return pg
