"""What the interop tests share: finding the reference clients, compiling the Java
drivers, and running a scenario inside a loopback-only network namespace.

The clients (../shared/clients) are software our users run and nobody here wrote. When
they, Java or the namespace tool are missing, the interop tests skip and say what is
missing; nothing else in the suite may skip.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from idnode.loadtest.processes import IDNODE
from idnode.loadtest.reference import JAVA_FLAGS as JAVA_FLAGS  # re-exported: test_differential

REPO = Path(__file__).resolve().parents[2]
CLIENTS = REPO.parent / "shared" / "clients"
CNRI = CLIENTS / "cnri-7.3.1"
SDK = CLIENTS / "id-sdk-2.0.3"
TEMPLATE = CLIENTS / "cnri-server-template"
IN_NETNS = CLIENTS / "in-netns"
JAVA_SRC = Path(__file__).parent / "java"


def missing() -> str | None:
    """Why the interop tests cannot run here, or None."""
    for path, what in (
        (CNRI / "handle.jar", "the HANDLE.NET 7.3.1 jars"),
        (SDK / "ID-SDK-2.0.3.jar", "the ID-SDK 2.0.3 jar"),
        (IN_NETNS, "the in-netns tool"),
    ):
        if not path.exists():
            return f"{what} are not at {path} (a checkout beside ../shared has them)"
    for tool in ("java", "javac", "unshare", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (in-netns runs unshare -n)"
    return None


def need_nft() -> str | None:
    return None if shutil.which("nft") else "nft (Debian package nftables) is not installed"


def cnri_classpath(build: Path) -> str:
    return f"{CNRI}/*:{build}"


def sdk_classpath(build: Path) -> str:
    # The SDK's own BouncyCastle jar is not in its repository; the 7.3.1 one serves.
    return f"{SDK}/*:{CNRI}/bcprov-ext-jdk15on-147.jar:{build}"


def cnri_java(build: Path, home: Path, *args: str) -> list[str]:
    """A command line running the 7.3.1 library (a tool or a driver) with ``home`` as
    the user's home (its .handle folder is the library's configuration)."""
    return ["java", *JAVA_FLAGS, f"-Duser.home={home}", "-cp", cnri_classpath(build), *args]


def hdl_interop(
    build: Path, home: Path, command: str, port: int, http: int, *args: str
) -> list[str]:
    """The HdlInterop driver's ``command`` against the server at 127.0.0.1:port."""
    return cnri_java(
        build,
        home,
        "HdlInterop",
        command,
        "host=127.0.0.1",
        f"port={port}",
        f"http={http}",
        *args,
    )


def local_home(home: Path) -> Path:
    """A home whose library sends every prefix to the local server (local_nas: *)."""
    (home / ".handle").mkdir(parents=True, exist_ok=True)
    (home / ".handle" / "local_nas").write_text("*\n")
    return home


def copy_admin_keys(dest: Path) -> None:
    """The reference template's DSA admin key pair (admpriv.bin, admpub.bin) into dest."""
    for f in ("admpriv.bin", "admpub.bin"):
        shutil.copy(TEMPLATE / f, dest / f)


def idnode_init(db: str, key: str, prefix: str, *args: str) -> list[str]:
    return [
        IDNODE,
        "init",
        "--prefix",
        prefix,
        *args,
        "--database-url",
        db,
        "--secret-key-file",
        key,
    ]


def library_setup(
    build: Path, home: Path, port: int, http: int, prefix: str, keys: Path
) -> list[list[str]]:
    """After idnode starts: point the library in ``home`` at it (its site info as the
    home's resolver_site), and add the driver's secret and RSA keys to 0.NA/prefix."""
    na = f"0.NA/{prefix}"
    return [
        hdl_interop(build, home, "siteinfo-file", port, http, f"out={home}/.handle/resolver_site"),
        hdl_interop(
            build,
            home,
            "addkeys",
            port,
            http,
            f"prefix={prefix}",
            f"pubkey=300:{na}:{keys}/admpriv.bin",
            "secret=s3cret",
            f"rsapub={keys}/rsa_admin_pub.bin",
        ),
    ]


def idnode_serve(
    db: str, key: str, *, handle: int, http: int, grpc: int, args: Sequence[str] = ()
) -> list[str]:
    """`idnode serve` on loopback with two workers."""
    return [
        IDNODE,
        "serve",
        "--database-url",
        db,
        "--secret-key-file",
        key,
        "--listen",
        "127.0.0.1",
        "--handle-port",
        str(handle),
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--workers",
        "2",
        *args,
    ]


def compile_drivers(build: Path) -> None:
    build.mkdir(parents=True, exist_ok=True)
    for source, cp in (
        ("HdlInterop.java", f"{CNRI}/*"),
        ("MakeSessionVectors.java", f"{CNRI}/*"),
        ("SdkInterop.java", f"{SDK}/*:{CNRI}/bcprov-ext-jdk15on-147.jar"),
    ):
        p = subprocess.run(
            [
                "javac",
                "-nowarn",
                "-encoding",
                "UTF-8",
                "-d",
                str(build),
                "-cp",
                cp,
                str(JAVA_SRC / source),
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert p.returncode == 0, f"javac {source}: {p.stderr}"


@dataclass
class Step:
    name: str
    cmd: list[str]
    timeout: float = 300
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Server:
    name: str
    cmd: list[str]
    port: int  # a TCP port that is open once the server is up
    before: list[list[str]] = field(default_factory=list)
    after: list[list[str]] = field(default_factory=list)
    settle: float = 0.5
    stop_after_setup: bool = False


def in_namespace(
    work: Path, servers: list[Server], steps: list[Step], nat: Sequence[tuple[int, int]] = ()
) -> dict[str, Any]:
    """Run servers and steps inside one fresh loopback-only namespace; the result JSON."""
    scenario = {
        "workdir": str(work),
        "nat": [list(x) for x in nat],
        "servers": [s.__dict__ for s in servers],
        "steps": [
            {"name": s.name, "cmd": s.cmd, "timeout": s.timeout, "env": s.env} for s in steps
        ],
    }
    path, result = work / "scenario.json", work / "result.json"
    path.write_text(json.dumps(scenario))
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    p = subprocess.run(
        [str(IN_NETNS), sys.executable, "-m", "tests.interop.inside", str(path), str(result)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert result.exists(), (
        f"the namespace run wrote no result: {p.stdout[-2000:]} {p.stderr[-4000:]}"
    )
    out: dict[str, Any] = json.loads(result.read_text())
    assert "error" not in out, f"{out['error']}\n{json.dumps(out['logs'], indent=1)[-6000:]}"
    return out


def checks(stdout: str) -> dict[str, tuple[bool, str]]:
    """The CHECK lines a Java driver printed: name -> (ok, detail)."""
    got: dict[str, tuple[bool, str]] = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) >= 3 and parts[0] == "CHECK":
            got[parts[1]] = (parts[2] == "OK", parts[3] if len(parts) > 3 else "")
    return got


def failures(got: dict[str, tuple[bool, str]], names: list[str] | None = None) -> list[str]:
    wanted = names if names is not None else list(got)
    return [
        f"{n}: {got[n][1] if n in got else 'not run'}"
        for n in wanted
        if not got.get(n, (False,))[0]
    ]


def skip_unless_ready() -> None:
    why = missing()
    if why:
        pytest.skip(f"interop with the reference clients needs them: {why}")
