"""``idnode inspect`` as operators run it: the installed console script, a real process."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.vectors import vector

pytestmark = pytest.mark.e2e

IDNODE = shutil.which("idnode") or str(Path(sys.executable).parent / "idnode")


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [IDNODE, *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_console_script_is_installed() -> None:
    assert Path(IDNODE).exists(), "pip install -e . should install the idnode console script"


def test_inspect_hex_argument() -> None:
    p = run("inspect", vector("captured: TCP response").hex())
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["header"]["op"] == "RESOLUTION" and out["header"]["response"] == "SUCCESS"
    assert out["header"]["flagNames"] == ["AT", "REC", "CA", "PO"]
    assert out["body"]["handle"] == "20.500.12345/abc"
    assert out["body"]["values"][0]["data"] == {"format": "string", "value": "http://example.com/"}


def test_inspect_a_long_hex_argument() -> None:
    wire = vector("resolution response to the first request")
    assert len(wire.hex()) > 255  # longer than a file name may be
    p = run("inspect", wire.hex())
    assert p.returncode == 0, p.stderr
    assert len(json.loads(p.stdout)["body"]["values"]) == 2


def test_inspect_raw_file_and_stdin(tmp_path: Path) -> None:
    wire = vector("resolution response to the first request")
    f = tmp_path / "msg.bin"
    f.write_bytes(wire)
    from_file = run("inspect", str(f))
    from_stdin = run("inspect", "-", stdin=wire)
    from_hex_stdin = run("inspect", "-", stdin=wire.hex().encode() + b"\n")
    assert from_file.returncode == from_stdin.returncode == from_hex_stdin.returncode == 0
    assert from_file.stdout == from_stdin.stdout == from_hex_stdin.stdout
    body = json.loads(from_file.stdout)["body"]
    assert body["values"][1]["data"]["format"] == "admin"


def test_inspect_bad_bytes_exit_non_zero_with_one_line() -> None:
    p = run("inspect", vector("resolution request, all values")[:-3].hex())
    assert p.returncode == 1
    assert p.stdout == b""
    lines = p.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "follow it" in lines[0]


def test_inspect_other_structures() -> None:
    p = run("inspect", "--as", "site", vector("HS_SITE data").hex(), "--compact")
    assert p.returncode == 0
    assert json.loads(p.stdout)["servers"][0]["address"] == "127.0.0.1"
    p = run("inspect", "--as", "admin", vector("HS_ADMIN data").hex())
    assert json.loads(p.stdout)["admin_handle"] == "0.NA/20.500.12345"


def test_help_explains() -> None:
    p = run("inspect", "--help")
    assert p.returncode == 0 and b"Exit status" in p.stdout
