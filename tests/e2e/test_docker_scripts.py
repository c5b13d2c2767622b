"""Every command the Docker image and the compose files run is a script in docker/scripts/;
here each runs as a process on loopback, as its container would run it (there is no
Docker engine on the machines the suite runs on):

- ``entrypoint`` waits for a PostgreSQL database that does not exist yet, runs
  ``idnode init`` and becomes the node (exec: SIGTERM reaches the node), which answers;
- ``healthcheck`` exits 0 while that node is up and 1 once it is stopped;
- ``pg-primary-init`` and ``pg-replica`` make a password-authenticated streaming replica
  of a primary that, like the postgres image's, asks host connections for passwords;
- ``redis-cluster-node`` and ``redis-cluster-create`` form a six-node Redis Cluster,
  and a second ``redis-cluster-create`` leaves it be.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from redis.cluster import RedisCluster

from idnode.loadtest.processes import stop, wait_log_line, wait_until
from tests.e2e.node_process import IDNODE
from tests.services import _pg_binary, free_port

pytestmark = pytest.mark.e2e

SCRIPTS = Path(__file__).resolve().parents[2] / "docker" / "scripts"
SUPERUSER_PASSWORD = "primary-" + secrets.token_hex(4)
REPLICATION_PASSWORD = "replica-" + secrets.token_hex(4)


def base_env(*paths: str) -> dict[str, str]:
    """This environment without the suite's own IDNODE_* settings, ``paths`` first on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDNODE_", "PG"))}
    env["PATH"] = os.pathsep.join([*paths, env.get("PATH", "")])
    return env


# --- PostgreSQL: a primary as the postgres image makes it ------------------------------


@dataclass
class Primary:
    port: int
    sock: Path
    tmp: Path
    bindir: str
    as_postgres: list[str]  # PostgreSQL will not run as root: runuser when we are root

    def psql(self, sql: str, *, port: int | None = None, sock: Path | None = None) -> str:
        p = subprocess.run(
            [
                f"{self.bindir}/psql",
                "--no-psqlrc",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(sock or self.sock),
                "-p",
                str(port or self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()


def owned_dir(path: Path, as_postgres: list[str]) -> Path:
    path.mkdir(mode=0o700)
    if as_postgres:
        shutil.chown(path, "postgres")
    return path


@pytest.fixture(scope="module")
def primary() -> Iterator[Primary]:
    initdb = _pg_binary("initdb")
    if initdb is None:
        pytest.fail("PostgreSQL's initdb is needed (apt-get install postgresql)", pytrace=False)
    # The directory of the server's own tools (initdb may be a link to it), where the
    # postgres image's PATH finds them: psql, pg_isready, pg_basebackup, postgres.
    bindir = str(Path(initdb).resolve().parent)
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    # Not under pytest's tmp_path: its parents are private to us, and postgres must enter.
    tmp = Path(tempfile.mkdtemp(prefix="idnode-docker-pg-"))
    if as_postgres:
        shutil.chown(tmp, "postgres")
    data, sock = tmp / "primary", owned_dir(tmp / "sock", as_postgres)
    pwfile = tmp / "pw"
    pwfile.write_text(SUPERUSER_PASSWORD + "\n")
    if as_postgres:
        shutil.chown(pwfile, "postgres")
    env = base_env(bindir)
    # As the postgres image: the local socket is trusted, TCP asks for a password.
    auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    subprocess.run(
        [*as_postgres, initdb, "-D", str(data), "-U", "postgres", "-E", "UTF8", "--no-sync", *auth],
        check=True,
        capture_output=True,
        env=env,
    )
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    pg_ctl = [*as_postgres, f"{bindir}/pg_ctl", "-D", str(data)]
    subprocess.run(
        [*pg_ctl, "-o", opts, "-l", str(tmp / "primary.log"), "-w", "start"],
        check=True,
        capture_output=True,
        env=env,
    )
    try:
        # The image runs its initdb.d scripts on the local socket, with these variables.
        init_env = env | {
            "PGHOST": str(sock),
            "PGPORT": str(port),
            "PGDATA": str(data),
            "POSTGRES_USER": "postgres",
            "POSTGRES_DB": "postgres",
            "REPLICATION_PASSWORD": REPLICATION_PASSWORD,
        }
        p = subprocess.run(
            [*as_postgres, str(SCRIPTS / "pg-primary-init")],
            capture_output=True,
            text=True,
            env=init_env,
            check=False,
        )
        assert p.returncode == 0, p.stderr
        subprocess.run([*pg_ctl, "reload"], check=True, capture_output=True, env=env)
        yield Primary(port, sock, tmp, bindir, as_postgres)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True, env=env)
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Replica:
    primary: Primary
    data: Path
    sock: Path
    port: int
    env: dict[str, str]
    log: Path

    def start(self, *options: str) -> subprocess.Popen[bytes]:
        """pg-replica as the postgres image runs it, with postgres options after it."""
        script = str(SCRIPTS / "pg-replica")
        here = ["-p", str(self.port), "-k", str(self.sock), "-c", "listen_addresses=127.0.0.1"]
        with open(self.log, "wb") as out:
            proc = subprocess.Popen(
                [*self.primary.as_postgres, script, *here, *options],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_log_line(self.log, "ready to accept read-only connections", proc=proc, timeout=120)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        pg_ctl = f"{self.primary.bindir}/pg_ctl"
        subprocess.run(
            [*self.primary.as_postgres, pg_ctl, "-D", str(self.data), "-m", "fast", "stop"],
            capture_output=True,
            env=self.env,
        )
        stop(proc, 20)

    def psql(self, sql: str) -> str:
        return self.primary.psql(sql, port=self.port, sock=self.sock)


def test_pg_replica_copies_the_primary_with_a_password_and_streams_from_it(
    primary: Primary,
) -> None:
    primary.psql("CREATE TABLE probe (word text); INSERT INTO probe VALUES ('copied')")
    assert primary.psql("SELECT rolreplication FROM pg_roles WHERE rolname = 'replicator'") == "t"
    data = owned_dir(primary.tmp / "replica", primary.as_postgres)
    env = base_env(primary.bindir) | {
        "PGDATA": str(data),
        "PRIMARY_HOST": "127.0.0.1",
        "PRIMARY_PORT": str(primary.port),
        "REPLICATION_PASSWORD": REPLICATION_PASSWORD,
    }
    sock = owned_dir(primary.tmp / "replica-sock", primary.as_postgres)
    replica = Replica(primary, data, sock, free_port(), env, primary.tmp / "replica.log")
    proc = replica.start("-c", "hot_standby=on", "-c", "fsync=off")
    try:
        # pg_basebackup -R made it a standby of the primary, with the replication role.
        assert (data / "standby.signal").exists()
        assert "user=replicator" in (data / "postgresql.auto.conf").read_text()
        assert replica.psql("SELECT pg_is_in_recovery()") == "t"
        assert replica.psql("SELECT word FROM probe") == "copied"
        # A write on the primary after the copy arrives by streaming.
        primary.psql("INSERT INTO probe VALUES ('streamed')")
        wait_until(
            lambda: "streamed" in replica.psql("SELECT string_agg(word, ',') FROM probe"),
            "the row written on the primary on the replica",
            timeout=60,
            proc=proc,
        )
        assert primary.psql("SELECT count(*) FROM pg_stat_replication") == "1"
    finally:
        replica.stop(proc)
    # Started again, it keeps its copy instead of copying anew.
    proc = replica.start()
    try:
        assert "holds a copy already" in replica.log.read_text()
        assert replica.psql("SELECT string_agg(word, ',' ORDER BY word) FROM probe") == (
            "copied,streamed"
        )
    finally:
        replica.stop(proc)


# --- the node: entrypoint and healthcheck -----------------------------------------------


def healthcheck(http_port: int, listen: str) -> subprocess.CompletedProcess[str]:
    env = base_env() | {"IDNODE_HTTP_PORT": str(http_port), "IDNODE_LISTEN": listen}
    return subprocess.run(
        [str(SCRIPTS / "healthcheck")], capture_output=True, text=True, env=env, timeout=60
    )


def test_entrypoint_waits_for_the_database_inits_and_becomes_the_node(
    primary: Primary, redis_url: str, redis_namespace: str, tmp_path: Path
) -> None:
    db = f"idnode_docker_{secrets.token_hex(4)}"
    handle_port, http_port, grpc_port = free_port(), free_port(), free_port()
    (tmp_path / "key").mkdir()
    key = tmp_path / "key" / "idnode-secret.key"
    # As compose.yaml sets them: the password in PGPASSWORD, not in the URL.
    env = base_env(str(Path(IDNODE).parent)) | {
        "IDNODE_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{primary.port}/{db}",
        "PGPASSWORD": SUPERUSER_PASSWORD,
        "IDNODE_REDIS_URL": redis_url,
        "IDNODE_REDIS_NAMESPACE": redis_namespace,
        "IDNODE_LISTEN": "127.0.0.1",
        "IDNODE_HANDLE_PORT": str(handle_port),
        "IDNODE_HTTP_PORT": str(http_port),
        "IDNODE_GRPC_PORT": str(grpc_port),
        "IDNODE_SECRET_KEY_FILE": str(key),
        "IDNODE_INIT_PREFIX": "88.166",
        "IDNODE_INIT_ADMIN_SECRET": "docker-" + secrets.token_hex(4),
        "IDNODE_WAIT_TIMEOUT": "120",
    }
    log = tmp_path / "entrypoint.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(SCRIPTS / "entrypoint")], cwd=tmp_path, env=env, stdout=out, stderr=out
        )
    try:
        # The database does not exist yet (the postgres image may still be making it).
        wait_log_line(log, "waiting for database", proc=proc, timeout=60)
        assert f":{SUPERUSER_PASSWORD}" not in log.read_text()
        primary.psql(f"CREATE DATABASE {db}")
        wait_log_line(log, "serving", proc=proc, timeout=180)
        answer = subprocess.run(
            [IDNODE, "resolve", "0.NA/88.166", "--server", f"127.0.0.1:{handle_port}"],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert answer.returncode == 0 and "HS_ADMIN" in answer.stdout, answer
        for listen in ("127.0.0.1", "0.0.0.0"):  # the image listens on 0.0.0.0
            up = healthcheck(http_port, listen)
            assert up.returncode == 0 and '"registry": "ok"' in up.stdout, up
    finally:
        # exec: the entrypoint's process is the node, so SIGTERM drains it and it exits 0.
        code = stop(proc, 30)
        assert code == 0, log.read_text()
    down = healthcheck(http_port, "127.0.0.1")
    assert down.returncode == 1 and "/healthz" in down.stdout, down

    # `entrypoint init` (compose.cluster.yaml's one-shot service) may run again: the
    # schema is upgraded in place and the node key is kept.
    made = key.read_bytes()
    again = subprocess.run(
        [str(SCRIPTS / "entrypoint"), "init"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert again.returncode == 0, again.stderr
    assert key.read_bytes() == made
    unset = {k: v for k, v in env.items() if k != "IDNODE_INIT_PREFIX"}
    refused = subprocess.run(
        [str(SCRIPTS / "entrypoint"), "init"],
        cwd=tmp_path,
        env=unset,
        capture_output=True,
        text=True,
    )
    assert refused.returncode == 2 and "IDNODE_INIT_PREFIX" in refused.stderr
    primary.psql(f"DROP DATABASE {db}")


# --- Redis Cluster -----------------------------------------------------------------------


def cluster_port(taken: set[int]) -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port in taken or port + 10000 > 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


def role(port: int) -> object:
    """What a Redis node says it is: master or slave."""
    answer = redis.Redis(port=port, decode_responses=True).role()
    assert isinstance(answer, list)
    return answer[0]


def test_redis_cluster_scripts_form_a_six_node_cluster_once(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed (apt-get install redis-server)")
    ports: list[int] = []
    for _ in range(6):
        ports.append(cluster_port(set(ports)))
    procs = []
    try:
        for port in ports:
            data = tmp_path / f"redis-{port}"
            data.mkdir()
            env = base_env() | {
                "REDIS_PORT": str(port),
                "REDIS_BIND": "127.0.0.1",
                "REDIS_DIR": str(data),
            }
            procs.append(
                subprocess.Popen(
                    [str(SCRIPTS / "redis-cluster-node")],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        env = base_env() | {"REDIS_CLUSTER_NODES": " ".join(f"127.0.0.1:{p}" for p in ports)}
        create = [str(SCRIPTS / "redis-cluster-create")]
        first = subprocess.run(create, env=env, capture_output=True, text=True, timeout=180)
        assert first.returncode == 0, first.stdout + first.stderr
        assert "cluster_state:ok" in first.stderr

        # Each node's own word on its role (gossip may not have told the others yet).
        roles = sorted(str(role(p)) for p in ports)
        assert roles == ["master"] * 3 + ["slave"] * 3, roles
        client = RedisCluster(host="127.0.0.1", port=ports[0], decode_responses=True)
        keys = {f"docker-probe-{i}": str(i) for i in range(64)}  # spread over the slots
        for k, v in keys.items():
            client.set(k, v)
        assert {k: client.get(k) for k in keys} == keys
        client.close()

        second = subprocess.run(create, env=env, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        assert "not creating it again" in second.stderr
    finally:
        for proc in procs:
            stop(proc, 10)
