"""A small Handle client on the codec: UDP (multi-packet), TCP and the HTTP tunnel.

Blocking sockets with timeouts: for the CLI, tests and tools, not the server.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import urllib.error
import urllib.request

from .codec import (
    FrameBuffer,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    Reassembler,
    ResolutionRequest,
    decode,
    encode,
    split_datagrams,
)

_ids = itertools.count(int.from_bytes(os.urandom(3), "big") + 1)


class ClientError(RuntimeError):
    pass


def parse_server(server: str, default_port: int) -> tuple[str, int]:
    host, _, port = server.rpartition(":") if ":" in server else (server, "", "")
    if not host:
        host, port = server, ""
    host = host.strip("[]")
    return host, int(port) if port else default_port


def resolution_request(
    handle: str,
    *,
    types: tuple[str, ...] = (),
    indexes: tuple[int, ...] = (),
    flags: int = OpFlag.REC | OpFlag.CA | OpFlag.PO,
    minor_version: int = 10,
) -> Message:
    return Message(
        op_code=OpCode.RESOLUTION,
        body=ResolutionRequest(handle, indexes, types),
        op_flags=flags,
        request_id=next(_ids) & 0x7FFFFFFF,
        minor_version=minor_version,
        expiration=int(time.time()) + 3600,
    )


def exchange_udp(host: str, port: int, request: Message, timeout: float = 5.0) -> Message:
    wire = encode(request)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        for gram in split_datagrams(wire):
            s.send(gram)
        r = Reassembler()
        deadline = time.monotonic() + timeout
        while True:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = s.recv(65535)
            except TimeoutError:
                raise ClientError(f"no answer from {host}:{port} over UDP in {timeout}s") from None
            whole = r.feed("server", data, time.monotonic())
            if whole is not None:
                m = decode(whole)
                if m.request_id == request.request_id:
                    return m


def exchange_tcp(host: str, port: int, request: Message, timeout: float = 5.0) -> list[Message]:
    """All messages answering ``request`` (several when the answer streams with CN)."""
    out: list[Message] = []
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(encode(request))
        fb = FrameBuffer()
        while True:
            data = s.recv(65536)
            if not data:
                raise ClientError(f"{host}:{port} closed the connection before answering")
            for frame in fb.feed(data):
                m = decode(frame)
                if m.request_id != request.request_id:
                    continue
                out.append(m)
                if not m.has(OpFlag.CN):
                    return out


def exchange_http(host: str, port: int, request: Message, timeout: float = 5.0) -> Message:
    req = urllib.request.Request(
        f"http://{host}:{port}/",
        data=encode(request),
        method="POST",
        headers={"Content-Type": "application/x-hdl-message"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return decode(resp.read())
    except urllib.error.URLError as exc:
        raise ClientError(f"HTTP exchange with {host}:{port} failed: {exc}") from None


def exchange(
    server: str, request: Message, transport: str = "udp", timeout: float = 5.0
) -> Message:
    default_port = 8000 if transport == "http" else 2641
    host, port = parse_server(server, default_port)
    try:
        if transport == "udp":
            return exchange_udp(host, port, request, timeout)
        if transport == "tcp":
            return exchange_tcp(host, port, request, timeout)[-1]
        if transport == "http":
            return exchange_http(host, port, request, timeout)
    except ProtocolError as exc:
        raise ClientError(f"the answer does not decode: {exc.reason}") from None
    except OSError as exc:
        raise ClientError(f"cannot reach {host}:{port} over {transport}: {exc}") from None
    raise ClientError(f"unknown transport {transport!r}")
