"""Every command of the README, run as a reader would, so the README cannot drift.

The shell, console and Python blocks are read from README.md itself. The demo's commands
run against a real `idnode demo` (on free loopback ports, with the administrator secret
it prints); "Running a node" runs against PostgreSQL and Redis of the test suite. Only
the names of this machine's servers and ports are substituted. A command not run here
is listed in SKIPPED with the reason and the test that covers it instead; a SKIPPED
entry that matches no README command fails the test, so the list cannot go stale.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.node_process import IDNODE
from tests.services import free_port
from tests.vectors import vector

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = str(Path(IDNODE).parent)

# Commands the suite does not run here (a substring of the command -> why).
SKIPPED = {
    "pip install -e .": "the suite runs inside that install (and test_wheel.py installs the "
    "wheel and runs idnode demo from it); the demo itself is the sandbox this test starts",
    "./scripts/test": "this suite is what it runs",
    "pytest tests/reliability/test_schema_fuzz.py": "the fuzz's longer run (minutes): the "
    "suite runs the same tests on their small deterministic budget",
    "pytest -s tests/reliability/test_mutation_fuzz.py": "the mutation fuzz's longer run "
    "(40 times CI's count): the suite runs the same test on its small deterministic budget",
    "java ": "the reference Java tools: tests/interop runs them (needs ../shared/clients)",
    "~/.handle/local_nas": "the reference Java library's settings: tests/interop",
    "loadtest run --doors udp,tcp,http": "a minutes-long load run: test_loadtest_run.py runs "
    "each door and mode for a fraction of a second",
    "loadtest run --doors udp --mode open": "a minutes-long load run: test_loadtest_run.py",
    "loadtest scale --server-url": "populates registries of 1e6-1e8: test_loadtest_cli.py "
    "runs scale on a small one",
    "python -m idnode.loadtest.": "benchmarks: test_codec_bench_smoke.py runs them briefly",
    "msg = decode(datagram)": "a sketch of the codec's API (datagram and handle stand for "
    "the caller's own); tests/unit drive the codec",
}


@dataclass
class Block:
    lang: str
    line: int  # where the block starts in README.md
    text: str
    commands: list[str] = field(default_factory=list)


def readme_blocks() -> list[Block]:
    out = []
    text = README.read_text()
    for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
        lang, body = m.group(1), m.group(2)
        if lang not in ("sh", "console", "python"):
            continue  # layouts and sample output
        b = Block(lang, text[: m.start()].count("\n") + 1, body)
        if lang == "python":
            b.commands = [body]
        elif lang == "console":
            b.commands = [ln[2:] for ln in body.splitlines() if ln.startswith("$ ")]
        else:
            joined = re.sub(r"\\\n\s*", "", body)
            b.commands = [
                ln.strip()
                for ln in joined.splitlines()
                if ln.strip() and not ln.strip().startswith("#")
            ]
        out.append(b)
    return out


def skip_reason(command: str) -> str | None:
    return next((why for key, why in SKIPPED.items() if key in command), None)


@dataclass
class Shell:
    """Runs README commands as a reader's shell would, with their variables kept."""

    cwd: Path
    subs: dict[str, str]
    env: dict[str, str]
    ran: list[str] = field(default_factory=list)
    background: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def prepare(self, command: str) -> str:
        for old, new in self.subs.items():
            command = command.replace(old, new)
        return command

    def run(self, command: str) -> str:
        """Run one command; fail the test unless it succeeds. Its standard output."""
        self.ran.append(command)
        cmd = self.prepare(command)
        assign = re.match(r"^(?:export )?([A-Z_]+)=(.*)$", cmd, re.S)
        if assign:
            name = assign.group(1)
            cmd = f'{name}={assign.group(2)} && printf %s "${name}"'
        p = subprocess.run(
            ["bash", "-o", "pipefail", "-c", cmd],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert p.returncode == 0, f"README: {command}\n-> exit {p.returncode}\n{p.stderr}"
        assert "Traceback" not in p.stderr, f"README: {command}\n{p.stderr}"
        if assign:
            self.env[assign.group(1)] = p.stdout
        check_answer(command, p.stdout)
        return p.stdout

    def start(self, command: str, http_port: int) -> None:
        """A command that serves: started, then waited for until its /healthz answers."""
        self.ran.append(command)
        proc = subprocess.Popen(
            ["bash", "-c", "exec " + self.prepare(command)],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.background.append(proc)
        wait_healthy(http_port, proc)

    def python(self, source: str) -> str:
        self.ran.append(source)
        p = subprocess.run(
            [sys.executable, "-c", self.prepare(source)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert p.returncode == 0, f"README python block:\n{source}\n{p.stderr}"
        return p.stdout

    def stop(self) -> None:
        for proc in self.background:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        self.background.clear()


def check_answer(command: str, stdout: str) -> None:
    """A JSON answer must say success: a refusal printed by curl still exits 0."""
    try:
        answer = json.loads(stdout)
    except ValueError:
        return
    if not isinstance(answer, dict):
        return
    if "responseCode" in answer:
        assert answer["responseCode"] == 1, f"README: {command}\n-> {stdout}"
    if "status" in answer and not isinstance(answer["status"], str):
        assert answer["status"] == 1, f"README: {command}\n-> {stdout}"  # SNMS answers
    assert "error" not in answer, f"README: {command}\n-> {stdout}"


def wait_healthy(http_port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited with {proc.returncode}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=2):
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing healthy on {http_port} in {timeout}s")


@dataclass
class Demo:
    cwd: Path
    handle_port: int
    http_port: int
    grpc_port: int
    secret: str
    output: str


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[Demo]:
    """`idnode demo`, as the README's first command runs it, on free loopback ports."""
    cwd = tmp_path / "demo"
    cwd.mkdir()
    ports = free_port(), free_port(), free_port()
    log = cwd / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [IDNODE, "demo", "--handle-port", str(ports[0]), "--http-port", str(ports[1]),
             "--grpc-port", str(ports[2])],
            cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            wait_healthy(ports[1], proc)
            text = log.read_text()
            found = re.search(r"^export SECRET='([^']+)'", text, re.M)
            assert found, text
            yield Demo(cwd, *ports, found.group(1), text)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()


def test_every_readme_command_runs(
    demo: Demo, tmp_path: Path, pg_url: str, redis_url: str, redis_namespace: str
) -> None:
    blocks = readme_blocks()
    assert len(blocks) > 10, "README blocks not found"
    # The sandbox prints what the README promises.
    assert "administrator 300:0.NA/88.166" in demo.output and "template tpl-v1" in demo.output
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"], "SECRET": demo.secret}
    env.pop("IDNODE_DATABASE_URL", None)
    wire = vector("resolution response to the first request")
    (demo.cwd / "capture.bin").write_bytes(wire)  # the capture a reader brings
    sandbox = Shell(
        demo.cwd,
        {
            ".venv/bin/idnode": "idnode",
            "127.0.0.1:8000": f"127.0.0.1:{demo.http_port}",
            "127.0.0.1:50051": f"127.0.0.1:{demo.grpc_port}",
        },
        dict(env),
    )
    # "Running a node": PostgreSQL and Redis instead of the hosts db and cache.
    node_cwd = tmp_path / "node"
    node_cwd.mkdir()
    (node_cwd / "handles.jsonl").write_text(  # the file a reader brings
        json.dumps(
            {"handle": "88.166.1001/ABC-123", "values": [{"index": 1, "type": "URL", "data": "x"}]}
        )
        + "\n"
    )
    node_ports = free_port(), free_port(), free_port()
    production = Shell(
        node_cwd,
        {
            "postgresql://idnode@db/idnode": pg_url,
            "redis://cache:6379/0": redis_url,
            "--listen 0.0.0.0": "--listen 127.0.0.1",
            "idnode serve ": f"idnode serve --handle-port {node_ports[0]} --http-port "
            f"{node_ports[1]} --grpc-port {node_ports[2]} --redis-namespace {redis_namespace} ",
        },
        dict(env),
    )
    load = Shell(
        tmp_path,
        {"--count 10000000": "--count 2000", "postgresql://postgres@127.0.0.1/idnode_lt": pg_url},
        dict(env),
    )
    skipped: dict[str, str] = {}
    try:
        for block in blocks:
            for command in block.commands:
                why = skip_reason(command)
                if why is not None:
                    skipped[command] = why
                elif block.lang == "python":
                    sandbox.python(command)
                elif command.startswith("export IDNODE_DATABASE_URL"):
                    production.run(command)
                elif command.startswith("idnode serve "):
                    production.start(command, node_ports[1])
                elif block.line == line_of("export IDNODE_DATABASE_URL"):
                    production.run(command)
                elif command.startswith("idnode loadtest"):
                    load.run(command)
                elif command.startswith(("idnode resolve", ".venv/bin/idnode resolve")):
                    words = command.split(" #")[0].split()  # not the comment's words
                    port = demo.http_port if "--http" in words else demo.handle_port
                    sandbox.run(
                        command.replace("idnode resolve ", f"idnode resolve --server "
                                        f"127.0.0.1:{port} ", 1)
                    )  # fmt: skip
                else:
                    sandbox.run(command)
    finally:
        production.stop()
    unused = [k for k in SKIPPED if not any(k in c for c in skipped)]
    assert unused == [], f"SKIPPED entries that match no README command: {unused}"
    every = [c for b in blocks for c in b.commands]
    assert len(sandbox.ran) + len(production.ran) + len(load.ran) + len(skipped) == len(every)


def line_of(text: str) -> int:
    """The line of the block that holds ``text``."""
    for b in readme_blocks():
        if text in b.text:
            return b.line
    raise AssertionError(f"{text!r} is not in the README")


def test_the_inspect_example_prints_what_the_readme_shows() -> None:
    (block,) = [b for b in readme_blocks() if b.lang == "console" and "idnode inspect" in b.text]
    command, _, shown = block.text.partition("\n")
    p = subprocess.run(
        [IDNODE, *command.removeprefix("$ idnode ").split()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == json.loads(shown)
