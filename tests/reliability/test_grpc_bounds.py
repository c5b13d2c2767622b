"""A hostile gRPC client cannot hold the node's calls or connections (issue 12): calls in
flight per client address and the connections one address may have calls on are capped
(RESOURCE_EXHAUSTED past them, with a message saying which cap), refusals are logged in
summary, and another client is still answered.

The attacker calls from 127.0.0.1 (grpc cannot pick its source address); the
well-behaved client goes through a small forwarder that connects from 127.0.0.2, so
the per-client caps count it apart.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import grpc

from idnode.resolver.grpc_protos import load

from .nodes import BIG, BIG_VALUE
from .test_connection_bounds import node_with

pb2, pb2_grpc = load()
CALLS, CONNS = 16, 4  # the caps the node is started with
CHANNELS, STREAMS = 6, 5  # the attack: 30 streams held open on 6 connections


def _pump(src: socket.socket, dst: socket.socket) -> None:
    with suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    for s in (src, dst):
        with suppress(OSError):
            s.shutdown(socket.SHUT_RDWR)


@contextmanager
def forwarder(port: int, source: str = "127.0.0.2") -> Iterator[int]:
    """A local port whose connections reach 127.0.0.1:``port`` from ``source``."""
    listener = socket.create_server(("127.0.0.1", 0))
    socks: list[socket.socket] = []

    def accept() -> None:
        with suppress(OSError):
            while True:
                client, _ = listener.accept()
                upstream = socket.create_connection(("127.0.0.1", port), source_address=(source, 0))
                socks.extend((client, upstream))
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for s in socks:
            s.close()


def new_channel(port: int) -> grpc.aio.Channel:
    # A channel of its own connection: grpc shares subchannels between channels otherwise.
    return grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
    )


async def attack(port: int, good_port: int) -> dict[str, Any]:
    """Open CHANNELS connections with STREAMS ResolveStream calls each, every call
    answered once and then held open; while they are held, a client from another address
    resolves, and a new call from the attacker's address is refused."""
    channels = [new_channel(port) for _ in range(CHANNELS)]
    held: list[Any] = []
    refused: list[str] = []
    for ch in channels:
        stub = pb2_grpc.ResolverStub(ch)
        for _ in range(STREAMS):
            call = stub.ResolveStream()
            try:
                await call.write(pb2.ResolveRequest(handle="88.166.1001/P-3"))
                r = await asyncio.wait_for(call.read(), 10)
                assert r.values[0].data == b"u3", r
                held.append(call)
            except grpc.aio.AioRpcError as exc:
                # A refusal can reach the client while it still sends its first message:
                # the write then fails as INTERNAL ("execute_batch"). Usually the call's
                # own status is then the server's answer; when the failed write got in
                # first, grpc sets the status to INTERNAL itself and the answer is lost.
                # A unary call on the same connection, at the same moment, has no such
                # race: the server answers it with the refusal this call met.
                code = await asyncio.wait_for(call.code(), 10)
                if code == grpc.StatusCode.INTERNAL and "execute_batch" in str(exc):
                    try:
                        await stub.Resolve(pb2.ResolveRequest(handle="88.166.1001/P-3"), timeout=10)
                    except grpc.aio.AioRpcError as again:
                        code, details = again.code(), again.details()
                    else:
                        code, details = grpc.StatusCode.OK, "answered"
                else:
                    details = await call.details()
                assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (code, exc)
                refused.append(details or "")
    out: dict[str, Any] = {"held": len(held), "refused": refused}
    async with new_channel(good_port) as good:  # another address: answered meanwhile
        r = await pb2_grpc.ResolverStub(good).Resolve(pb2.ResolveRequest(handle=BIG), timeout=10)
        out["good"] = len(r.values[0].data)
    try:  # the attacker's address has no call left
        await pb2_grpc.ResolverStub(channels[0]).Resolve(
            pb2.ResolveRequest(handle="88.166.1001/P-4"), timeout=10
        )
        out["extra"] = "answered"
    except grpc.aio.AioRpcError as exc:
        out["extra"] = exc.code()
    for call in held:
        await call.done_writing()
        assert await call.read() == grpc.aio.EOF
        assert await call.code() == grpc.StatusCode.OK
    # its calls done, the address is served again
    r = await pb2_grpc.ResolverStub(channels[0]).Resolve(
        pb2.ResolveRequest(handle="88.166.1001/P-4"), timeout=10
    )
    out["after"] = r.values[0].data
    for ch in channels:
        await ch.close()
    return out


def test_grpc_calls_and_connections_per_client_are_capped(tmp_path: Path) -> None:
    flags = ("--grpc-calls-per-client", str(CALLS), "--conns-per-client", str(CONNS))
    with node_with(tmp_path, *flags) as n, forwarder(n.grpc_port) as good_port:
        out = asyncio.run(attack(n.grpc_port, good_port))
        assert out["held"] == CALLS, out
        refused = out["refused"]
        assert len(refused) == CHANNELS * STREAMS - CALLS, out
        # the 4th connection fills the calls cap; the 5th and 6th are over the connections cap
        calls = f"limit reached: {CALLS} gRPC calls in flight from one client address"
        conns = f"limit reached: {CONNS} gRPC connections with calls from one client address"
        assert sum(calls in r for r in refused) == STREAMS - 1, refused
        assert sum(conns in r for r in refused) == 2 * STREAMS, refused
        assert out["good"] == BIG_VALUE
        assert out["extra"] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert out["after"] == b"u4"
        log = n.log_text()
        # summarised: the first refusal of each kind at once, the rest counted later
        assert "limit reached: grpc" in log, log[-3000:]
        assert log.count("limit reached: grpc") <= 3, log[-3000:]
