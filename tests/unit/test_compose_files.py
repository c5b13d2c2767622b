"""docker/ says what we intend, checked without a Docker engine (none runs where the suite
does): both compose files are rendered by `docker-compose config` (which validates them
against the compose schema) and the rendered services are read; the Dockerfile is held
to a few hadolint-style rules; every script the image or compose runs exists, is
executable, parses, and is run by tests/e2e/test_docker_scripts.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from idnode.resolver.settings import FIELDS, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
SCRIPTS = DOCKER / "scripts"
SCRIPT_TEST = REPO / "tests" / "e2e" / "test_docker_scripts.py"
DEFAULTS = Settings()
# The ports a container serves on (Settings' defaults), as compose's target ports.
NODE_PORTS = {
    f"{DEFAULTS.handle_port}/udp",
    f"{DEFAULTS.handle_port}/tcp",
    f"{DEFAULTS.http_port}/tcp",
    f"{DEFAULTS.grpc_port}/tcp",
}


def compose_config(name: str) -> dict[str, Any]:
    """The file as docker-compose renders it, with every ${VAR:-default} at its default."""
    if shutil.which("docker-compose") is None:
        pytest.skip(
            "docker-compose is not installed (Debian package docker-compose; scripts/test "
            "installs it when it runs as root with apt-get)"
        )
    overridden = ("POSTGRES_PASSWORD", "REPLICATION_PASSWORD", "COMPOSE_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("IDNODE_", *overridden))}
    p = subprocess.run(
        ["docker-compose", "-f", str(DOCKER / name), "config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert p.returncode == 0, f"docker-compose config -f docker/{name}:\n{p.stderr}"
    rendered = yaml.safe_load(p.stdout)
    assert isinstance(rendered, dict)
    return rendered


def published(service: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(host address, host port, target port/protocol) of each published port, from
    either rendering (docker-compose 1 keeps the short string, 2 the long form)."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, str):  # [ADDRESS:]HOST_PORT:TARGET[/PROTOCOL]
            *address, host_port, target = port.split(":")
            target = target if "/" in target else target + "/tcp"
            out.append((":".join(address), host_port, target))
        else:
            protocol = port.get("protocol", "tcp")
            target = f"{port['target']}/{protocol}"
            out.append((port.get("host_ip", ""), str(port.get("published", "")), target))
    return out


def bind_sources(service: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of each bind mount."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, str):
            source, target = v.split(":")[:2]
        else:
            source, target = v.get("source", ""), v.get("target", "")
        if source.startswith("/"):
            out.append((Path(source), target))
    return out


def env_file(path: Path) -> dict[str, str]:
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            pairs[key] = value
    return pairs


def host(url: str) -> str:
    return urlsplit(url).hostname or ""


def assert_runs_a_script(path: Path) -> None:
    assert path.parent == SCRIPTS, f"{path}: the commands compose runs live in docker/scripts/"
    assert path.is_file() and os.access(path, os.X_OK), f"{path} is not an executable file"


# --- compose.yaml: one node -----------------------------------------------------------


def test_one_node_compose_file_is_valid_and_local_by_default() -> None:
    services = compose_config("compose.yaml")["services"]
    assert set(services) == {"idnode", "postgres", "redis"}
    node = services["idnode"]
    env = node["environment"]
    assert host(env["IDNODE_DATABASE_URL"]) == "postgres"
    assert urlsplit(env["IDNODE_DATABASE_URL"]).password is None  # in PGPASSWORD
    assert env["PGPASSWORD"] == services["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert host(env["IDNODE_REDIS_URL"]) == "redis"
    assert env["IDNODE_INIT_PREFIX"]  # the entrypoint makes the registry
    assert set(env) - {"PGPASSWORD"} <= {f"IDNODE_{n.upper()}" for n in FIELDS} | {
        "IDNODE_INIT_PREFIX",
        "IDNODE_INIT_ADMIN_SECRET",
    }
    ports = published(node)
    assert {target for _, _, target in ports} == NODE_PORTS
    assert {address for address, _, _ in ports} == {"127.0.0.1"}
    assert node["build"]["dockerfile"] == "docker/Dockerfile"
    assert Path(node["build"]["context"]).resolve() == REPO
    for dependency in ("postgres", "redis"):
        assert node["depends_on"][dependency]["condition"] == "service_healthy"
        assert services[dependency]["healthcheck"]["test"][0] == "CMD"
        assert services[dependency].get("ports") is None  # reached over compose's network
    assert any(t == "/var/lib/idnode/key" for _, t in _named_volumes(node))


def _named_volumes(service: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for v in service.get("volumes", []):
        source, target = (v.split(":")[:2]) if isinstance(v, str) else (v["source"], v["target"])
        if not source.startswith("/"):
            out.append((source, target))
    return out


# --- compose.cluster.yaml: three nodes, replicated PostgreSQL, Redis Cluster --------


def test_cluster_compose_file_gives_three_nodes_the_replica_and_the_redis_cluster() -> None:
    services = compose_config("compose.cluster.yaml")["services"]
    redis_nodes = [f"redis-{i}" for i in range(1, 7)]
    nodes = ["idnode-1", "idnode-2", "idnode-3"]
    assert set(services) == {
        *nodes,
        *redis_nodes,
        "idnode-init",
        "pg-primary",
        "pg-replica",
        "redis-cluster-create",
    }
    shared = env_file(DOCKER / "cluster.env")
    assert shared["IDNODE_REDIS_CLUSTER"] == "true"
    assert host(shared["IDNODE_DATABASE_URL"]) == "pg-primary"
    assert [host(u) for u in shared["IDNODE_DATABASE_READ_URL"].split(",")] == ["pg-replica"]
    assert host(shared["IDNODE_REDIS_URL"]) in redis_nodes
    for key in shared:
        name = key.removeprefix("IDNODE_").lower()
        assert key.startswith("IDNODE_") and name in FIELDS, key

    # The node reads them as they are written (a typo or a bad value stops it here).
    s = load_settings(env=shared)
    assert s.database_url == shared["IDNODE_DATABASE_URL"] and s.listen == "0.0.0.0"
    assert getattr(s, "redis_cluster", True) is True

    seen_ports: set[tuple[str, str]] = set()
    for name in nodes:
        node = services[name]
        env = node["environment"]
        # Every node runs on the same settings, those of cluster.env (the e2e test's too).
        assert {k: env[k] for k in shared} == shared, name
        assert env["PGPASSWORD"] == services["pg-primary"]["environment"]["POSTGRES_PASSWORD"]
        assert "IDNODE_INIT_PREFIX" not in env  # only idnode-init makes the registry
        conditions = {k: v["condition"] for k, v in node["depends_on"].items()}
        assert conditions == {
            "idnode-init": "service_completed_successfully",
            "redis-cluster-create": "service_completed_successfully",
            "pg-replica": "service_healthy",
        }
        ports = published(node)
        assert {t for _, _, t in ports} == NODE_PORTS
        assert {a for a, _, _ in ports} == {"127.0.0.1"}
        for _, port, target in ports:
            assert (port, target.split("/")[1]) not in seen_ports, f"{name} reuses {port}"
            seen_ports.add((port, target.split("/")[1]))
        # The node key idnode-init wrote, read-only.
        (key,) = [v for v in node["volumes"] if "/var/lib/idnode/key" in str(v)]
        assert str(key).endswith(":ro") or (isinstance(key, dict) and key.get("read_only"))

    init = services["idnode-init"]
    assert init["command"] == ["init"] and init["environment"]["IDNODE_INIT_PREFIX"]
    assert init["depends_on"]["pg-primary"]["condition"] == "service_healthy"

    primary, replica = services["pg-primary"], services["pg-replica"]
    (init_script,) = [s for s, t in bind_sources(primary) if "docker-entrypoint-initdb.d" in t]
    assert init_script.name == "pg-primary-init"
    assert_runs_a_script(init_script)
    assert replica["user"] == "postgres" and replica["environment"]["PRIMARY_HOST"] == "pg-primary"
    assert (
        replica["environment"]["REPLICATION_PASSWORD"]
        == (primary["environment"]["REPLICATION_PASSWORD"])
    )
    _runs_its_mounted_script(replica, "pg-replica")

    for name in redis_nodes:
        assert services[name]["user"] == "redis"
        _runs_its_mounted_script(services[name], "redis-cluster-node")
        assert services[name].get("ports") is None
    create = services["redis-cluster-create"]
    _runs_its_mounted_script(create, "redis-cluster-create")
    members = create["environment"]["REDIS_CLUSTER_NODES"].split()
    assert members == [f"{n}:6379" for n in redis_nodes]
    assert create["environment"]["REDIS_CLUSTER_REPLICAS"] == "1"
    assert {k: v["condition"] for k, v in create["depends_on"].items()} == {
        n: "service_healthy" for n in redis_nodes
    }


def test_redis_runs_as_a_cache_that_restarts_empty(tmp_path: Path) -> None:
    """Neither compose file's Redis persists: a node that restarts must come back empty,
    not with values that writes replaced while it was down. The cluster node's script is
    run for real (cluster mode off, the only extra argument) and restarted after a
    graceful shutdown, which is when RDB and AOF would have kept its keys."""
    single = compose_config("compose.yaml")["services"]["redis"]
    assert single["command"] == ["redis-server", "--save", "", "--appendonly", "no"]
    server = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/bin")
    if server is None:
        pytest.fail("redis-server is needed (apt-get install redis-server)")
    import redis

    from idnode.loadtest.processes import free_port, wait_until

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")} | {
        "REDIS_PORT": str(port),
        "REDIS_BIND": "127.0.0.1",
        "REDIS_DIR": str(tmp_path),
        "PATH": f"{Path(server).parent}:{os.environ.get('PATH', '')}",
    }

    def run() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [str(SCRIPTS / "redis-cluster-node"), "--cluster-enabled", "no"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(
            lambda: bool(redis.Redis(port=port).ping()),
            "redis-cluster-node",
            timeout=20.0,
            proc=proc,
            retry_on=(redis.RedisError, OSError),
        )
        return proc

    first = run()
    with redis.Redis(port=port) as r:
        r.set("idnode:h:{88.166/x}", b"\x01old")
        config = r.config_get("*")
        assert config["appendonly"] == "no" and config["save"] == "", config
        r.shutdown()  # graceful: what a snapshot or the AOF would keep, it keeps
    first.wait(10)
    second = run()
    try:
        with redis.Redis(port=port) as r:
            assert r.dbsize() == 0
    finally:
        second.terminate()
        second.wait(10)


def _runs_its_mounted_script(service: dict[str, Any], script: str) -> None:
    (entrypoint,) = service["entrypoint"]
    mounted = {target: source for source, target in bind_sources(service)}
    assert entrypoint in mounted, f"{entrypoint} is not mounted from docker/scripts"
    assert mounted[entrypoint].name == script
    assert_runs_a_script(mounted[entrypoint])


# --- Dockerfile ----------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of docker/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DOCKER / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), " ".join(rest.split())))
    return out


def test_dockerfile_is_multi_stage_non_root_and_checks_its_health() -> None:
    steps = instructions()
    froms = [args for word, args in steps if word == "FROM"]
    assert len(froms) == 2 and froms[0].endswith("AS builder"), froms
    assert all(":latest" not in f and ":" in f for f in froms), "pin the base images"
    # The runtime Python is the one pyproject requires.
    required = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    (version,) = [a.split("=", 1)[1] for w, a in steps if w == "ARG" and "PYTHON_VERSION" in a]
    assert required == f">={version}", (required, version)
    runtime = steps[[i for i, (w, _) in enumerate(steps) if w == "FROM"][1] :]

    users = [args for word, args in runtime if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the node must not run as root"
    assert any(w == "RUN" and "useradd" in a and "idnode" in a for w, a in runtime)

    # Only the builder's wheels are installed, without an index; no cache kept.
    runs = [a for w, a in runtime if w == "RUN"]
    assert any("--no-index" in r and "--find-links /wheels" in r for r in runs)
    for r in (a for w, a in steps if w == "RUN"):
        assert "pip install" not in r or "--no-cache-dir" in r, r
        assert "apt-get install" not in r or "--no-install-recommends" in r, r
    # The builder compiles the optional UDP batch I/O module into the wheel; the runtime
    # installs no compiler (it takes the built wheel).
    builder = steps[: [i for i, (w, _) in enumerate(steps) if w == "FROM"][1]]
    assert any(w == "RUN" and "apt-get install" in a and " gcc" in a for w, a in builder)
    assert not any(w == "RUN" and "gcc" in a for w, a in runtime)
    exposed = set(" ".join(a for w, a in runtime if w == "EXPOSE").split())
    assert exposed == NODE_PORTS

    copied: dict[str, str] = {}
    for word, args in steps:
        if word == "COPY" and "--from" not in args:
            *sources, dest = [a for a in args.split() if not a.startswith("--")]
            for source in sources:
                assert (REPO / source).exists(), f"COPY {source}: no such path"
                if source.startswith("docker/scripts/"):
                    assert dest.endswith("/")
                    copied[dest + Path(source).name] = source
    (check,) = [json.loads(a.split("CMD", 1)[1]) for w, a in runtime if w == "HEALTHCHECK"]
    (entry,) = [json.loads(a) for w, a in runtime if w == "ENTRYPOINT"]  # exec form: signals
    for command in (check, entry):
        assert command[0] in copied, f"{command[0]} is not one of docker/scripts/"
        assert_runs_a_script(REPO / copied[command[0]])
    assert Path(copied[check[0]]).name == "healthcheck"
    assert Path(copied[entry[0]]).name == "entrypoint"
    assert [json.loads(a) for w, a in runtime if w == "CMD"] == [["serve"]]


def test_dockerignore_keeps_keys_registries_and_the_venv_out_of_the_image() -> None:
    ignored = {ln.strip() for ln in (REPO / ".dockerignore").read_text().splitlines() if ln.strip()}
    assert {".git", ".venv", "*.key", "*.db"} <= ignored
    # ... and not what the wheel is built from.
    for needed in ("pyproject.toml", "README.md", "resolver", "registry", "protos", "docker"):
        assert needed not in ignored


# --- the scripts ---------------------------------------------------------------------


def test_every_script_is_executable_parses_is_used_and_is_run_by_a_test() -> None:
    scripts = sorted(p for p in SCRIPTS.iterdir() if p.is_file())
    assert scripts, "docker/scripts is empty"
    used = (DOCKER / "Dockerfile").read_text() + "".join(
        (DOCKER / f).read_text() for f in ("compose.yaml", "compose.cluster.yaml")
    )
    run_by_test = SCRIPT_TEST.read_text()
    for script in scripts:
        assert_runs_a_script(script)
        first = script.read_text().splitlines()[0]
        if first == "#!/bin/sh":
            p = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
            assert p.returncode == 0, f"{script.name}: {p.stderr}"
        else:
            assert first == "#!/usr/bin/env python3", f"{script.name}: shebang {first!r}"
            compile(script.read_text(), str(script), "exec")
        assert f"scripts/{script.name}" in used, f"{script.name} is run by no image or service"
        assert f'"{script.name}"' in run_by_test, f"{script.name} is run by no test"


def test_the_entrypoints_own_variables_are_not_node_settings() -> None:
    """IDNODE_INIT_* and IDNODE_WAIT_TIMEOUT are the entrypoint's: a node setting of the
    same name would be set by them too."""
    text = (SCRIPTS / "entrypoint").read_text()
    own = set(re.findall(r"IDNODE_[A-Z_]+", text)) - {"IDNODE_DATABASE_URL"}
    assert own >= {"IDNODE_INIT_PREFIX", "IDNODE_WAIT_TIMEOUT"}
    assert {v for v in own if v.removeprefix("IDNODE_").lower() in FIELDS} == set()
