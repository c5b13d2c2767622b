"""fetch_site (resolver/upstream/register.py), which ``idnode prefix apply --site-from``
runs in the CLI: one overall deadline, however the server trickles its answer, and a
bounded read. The node's REST API never fetches a site itself (no siteFrom), and the
prefix door uses only the REST door's public helpers."""

from __future__ import annotations

import ast
import socket
import threading
from pathlib import Path

import pytest

from idnode.resolver.client import ClientError
from idnode.resolver.codec import (
    FrameBuffer,
    Interface,
    InterfaceProtocol,
    InterfaceType,
    Message,
    OpCode,
    OpFlag,
    ResponseCode,
    ServerInfo,
    SiteInfo,
    decode,
    encode,
)
from idnode.resolver.codec.bodies import SiteInfoResponse
from idnode.resolver.upstream import register
from idnode.resolver.upstream.register import fetch_site

ROOT = Path(__file__).resolve().parents[2]
SITE = SiteInfo(
    (
        ServerInfo.at(
            "127.0.0.1",
            interfaces=(Interface(InterfaceType.ADMIN_AND_QUERY, InterfaceProtocol.TCP, 2641),),
        ),
    )
)


def serve(behaviour: str) -> tuple[str, threading.Event]:
    """A local server that answers GET_SITE_INFO with continuation (CN) frames without
    end, a byte at a time ("trickle") or as fast as it can ("flood")."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    done = threading.Event()

    def run() -> None:
        conn, _ = listener.accept()
        with conn, listener:
            conn.settimeout(5.0)
            try:
                fb, request = FrameBuffer(), None
                while request is None:
                    request = next(iter(fb.feed(conn.recv(65536))), None)
                # an answer that goes on and on: CN frames for this request
                frame = encode(
                    Message(
                        op_code=OpCode.GET_SITE_INFO,
                        response_code=ResponseCode.SUCCESS,
                        request_id=decode(request).request_id,
                        op_flags=OpFlag.CN,
                        body=SiteInfoResponse(SITE),
                    )
                )
                while not done.is_set():
                    if behaviour == "trickle":  # a byte at a time, well within a read timeout
                        for i in range(len(frame)):
                            conn.sendall(frame[i : i + 1])
                            if done.wait(0.05):
                                break
                    else:
                        conn.sendall(frame)
            except OSError:
                pass

    threading.Thread(target=run, daemon=True).start()
    return f"127.0.0.1:{listener.getsockname()[1]}", done


def test_a_trickling_server_does_not_keep_the_caller_past_the_deadline() -> None:
    server, done = serve("trickle")
    try:
        # each byte comes well within the per-read timeout; only the overall one ends it
        with pytest.raises(ClientError, match="no site information"):
            fetch_site(server, timeout=0.5)
    finally:
        done.set()


def test_a_flooding_server_is_read_only_so_far(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(register, "FETCH_SITE_MAX_BYTES", 200_000)
    server, done = serve("flood")
    try:
        # a stream of CN frames that never ends the answer: stopped at the cap
        with pytest.raises(ClientError, match="over 200000 bytes"):
            fetch_site(server, timeout=30.0)
    finally:
        done.set()


def test_the_rest_api_fetches_no_site_and_the_prefix_door_uses_public_helpers() -> None:
    source = (ROOT / "resolver" / "rest_prefixes_door.py").read_text()
    assert "fetch_site" not in source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_"):
            base = node.value
            if isinstance(base, ast.Attribute) and base.attr == "rest":
                raise AssertionError(f"the prefix door calls RestApi.{node.attr}")
