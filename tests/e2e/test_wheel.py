"""The wheel is the product: built from this checkout, installed into a fresh virtual
environment outside it, it must serve. (An earlier wheel shipped no .proto and claimed the
bare names resolver, registry and loadtest.)"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from idnode.loadtest.processes import free_port, wait_log_line

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def run(args: list[str], cwd: Path, timeout: float = 600) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    p = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, f"{args}\n{p.stdout}\n{p.stderr}"
    return p.stdout


def test_the_wheel_installs_outside_the_checkout_and_serves(tmp_path: Path) -> None:
    dist, venv, source = tmp_path / "dist", tmp_path / "venv", tmp_path / "source"
    # Built from a copy of the tracked files: setuptools writes build/ and *.egg-info
    # beside its sources, and a stale build/ in the checkout could leak into the wheel.
    tracked = run(["git", "ls-files", "-z"], REPO).split("\0")
    for name in filter(None, tracked):
        src, dst = REPO / name, source / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():
            shutil.copy2(src, dst)
    run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(dist),
            str(source),
        ],
        tmp_path,
    )
    (wheel,) = dist.glob("idnode-*.whl")
    run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    py, idnode = str(venv / "bin" / "python"), str(venv / "bin" / "idnode")
    run([py, "-m", "pip", "install", "--quiet", str(wheel)], tmp_path)

    # One import package, from the fresh environment; no bare top-level names.
    probe = (
        "import importlib.util, json, idnode.resolver, idnode.protos;"
        "print(json.dumps({'file': idnode.resolver.__file__,"
        " 'bare': [n for n in ('resolver', 'registry', 'loadtest')"
        " if importlib.util.find_spec(n)]}))"
    )
    found = json.loads(run([py, "-c", probe], tmp_path))
    assert found["file"].startswith(str(venv)) and found["bare"] == []

    handle_port, http_port, grpc_port = free_port(), free_port(), free_port()
    log = tmp_path / "demo.log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["IDNODE_PROTO_CACHE"] = str(tmp_path / "proto-cache")  # generated here, from the wheel
    with open(log, "wb") as out:
        ports = ["--handle-port", str(handle_port), "--http-port", str(http_port)]
        proc = subprocess.Popen(
            [idnode, "demo", *ports, "--grpc-port", str(grpc_port)],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_log_line(log, "serving", proc=proc, timeout=90)
            # The installed command resolves over the Handle protocol ...
            answer = run(
                [idnode, "resolve", "88.166.1001/HV-0001", "--server", f"127.0.0.1:{handle_port}"],
                tmp_path,
                timeout=60,
            )
            assert "HV-0001" in answer and "URL" in answer, answer
            # ... and gRPC answers from code generated out of the wheel's own .proto.
            grpc_probe = (
                "import grpc, sys; from idnode.resolver.grpc_protos import load;"
                "pb2, stubs = load();"
                f"ch = grpc.insecure_channel('127.0.0.1:{grpc_port}');"
                "q = pb2.ResolveRequest(handle='88.166.1001/HV-0001');"
                "r = stubs.ResolverStub(ch).Resolve(q, timeout=10);"
                "print(r.handle, len(r.values))"
            )
            handle, count = run([py, "-c", grpc_probe], tmp_path, timeout=60).split()
            assert handle == "88.166.1001/HV-0001" and int(count) > 0
            assert list((tmp_path / "proto-cache").glob("grpc-v1-*/handles_pb2.py"))
            # ... and the web page renders from the wheel's own templates and static files.
            page = f"http://127.0.0.1:{http_port}/88.166.1001/HV-0001?noredirect&lang=en"
            with urllib.request.urlopen(page, timeout=30) as r:
                html = r.read().decode()
            assert "Handle record" in html and "HV-0001" in html, html
            css = html.split('rel="stylesheet" href="', 1)[1].split('"', 1)[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}{css}", timeout=30) as r:
                assert b"@media" in r.read()
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
