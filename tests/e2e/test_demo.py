"""`idnode demo`, the README's run command: it loads the demo registry and serves it."""

from __future__ import annotations

import json
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest

from idnode.loadtest.processes import IDNODE, free_port, wait_log_line
from idnode.resolver.client import exchange, resolution_request
from idnode.resolver.codec import ResolutionResponse

pytestmark = pytest.mark.e2e


def test_demo_serves_its_data(tmp_path: Path) -> None:
    handle_port, http_port, grpc_port = free_port(), free_port(), free_port()
    log = tmp_path / "demo.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                IDNODE,
                "demo",
                "--handle-port",
                str(handle_port),
                "--http-port",
                str(http_port),
                "--grpc-port",
                str(grpc_port),
            ],
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_log_line(log, "serving", proc=proc, timeout=60)
            text = log.read_text()
            assert "demo data: 15 handles" in text and "template tpl-v1" in text
            m = exchange(f"127.0.0.1:{handle_port}", resolution_request("88.166.1001/HV-0001"))
            assert m.response_code == 1 and isinstance(m.body, ResolutionResponse)
            url = f"http://127.0.0.1:{http_port}/api/handles/88.166.1003/BR-0002?type=productName"
            with urllib.request.urlopen(url, timeout=10) as r:
                assert json.loads(r.read())["values"][0]["data"]["value"] == ("Bearing BR-6204 #2")
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0, log.read_text()
