"""An HTTP client that asks and never reads its answers is disconnected (issue 12):
aiohttp waits for a response to drain without a deadline, so the node aborts a
connection whose queued answers stay over the transport's high-water mark for
--http-send-timeout seconds; other clients are answered meanwhile and the node's memory
stays bounded.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from pathlib import Path

from .nodes import BIG, BIG_VALUE, node_rss_mib, served_correctly
from .test_connection_bounds import ATTACKER, node_with, peak_rss

TIMEOUT = 2.0  # --http-send-timeout in this test


def big_from_good_client(port: int) -> None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/handles/{BIG}", timeout=10) as r:
        doc = json.loads(r.read())
    assert len(json.dumps(doc)) > 4 * BIG_VALUE


def drain(s: socket.socket, limit: float) -> tuple[int, str]:
    """Read ``s`` to its end (or ``limit`` s): the bytes received and how it ended."""
    s.settimeout(limit)
    received = 0
    try:
        while chunk := s.recv(1 << 20):
            received += len(chunk)
    except ConnectionResetError:
        return received, "reset"
    except TimeoutError:
        return received, "open"
    return received, "eof"


def test_an_http_client_that_never_reads_is_disconnected(tmp_path: Path) -> None:
    gets = 300  # about 20 MB of answers, all queued for a client that reads none
    with node_with(tmp_path, "--http-send-timeout", str(TIMEOUT)) as n:
        base = node_rss_mib(n)
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: the window
        s.bind((ATTACKER, 0))
        s.connect(("127.0.0.1", n.http_port))
        one = f"GET /api/handles/{BIG} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        t0 = time.monotonic()
        s.sendall(one * gets)
        served_correctly(n)  # while the attacker's answers stall
        big_from_good_client(n.http_port)
        # past the send timeout without reading (reading would let the answers drain)
        peak = peak_rss(n, lambda: False, TIMEOUT * 3)
        served_correctly(n)
        big_from_good_client(n.http_port)
        received, end = drain(s, 20)
        waited = time.monotonic() - t0
        s.close()
        assert end in ("reset", "eof"), (end, received, waited)
        # far less than everything asked for: the node gave up on the connection
        assert received < gets * 4 * BIG_VALUE // 4, received
        assert peak - base < 60, f"RSS {base:.0f} -> {peak:.0f} MiB"
        log = n.log_text()
        assert f"limit reached: http: answers not read within {TIMEOUT:g} s" in log, log[-3000:]
        assert "Traceback" not in log, log[-3000:]
