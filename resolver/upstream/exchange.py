"""One request to one server over UDP or TCP, on the event loop.

resolver/client.py's exchanges block (sockets with timeouts, for the CLI and tools); the
node calls upstream servers from its event loop, so these never block: a datagram
endpoint or a stream, each bounded by one deadline. The answer comes back with its
bytes, because a certified answer is checked over the bytes as they came.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..client import ClientError
from ..codec import (
    FrameBuffer,
    Message,
    OpFlag,
    ProtocolError,
    Reassembler,
    ResolutionRequest,
    ResolutionResponse,
    decode,
    encode,
)
from ..codec.datagrams import split_datagrams

# What a bad address or port in a site record raises when it is used (a port past 65535
# is OverflowError, an address that does not parse ValueError): no answer, like a refusal.
_UNREACHABLE = (OSError, OverflowError, ValueError)


class Unanswered(ClientError):
    """The server did not answer usably: timed out, refused, closed, or sent bytes that
    are not the protocol. The walker moves on to the next server or site."""


@dataclass(frozen=True, slots=True)
class Answer:
    message: Message
    wire: bytes  # the answering message as received (envelope included)
    transport: str  # "udp" or "tcp"


def answers(request: Message, m: Message) -> bool:
    """Whether ``m`` answers ``request``: the same request id and, for a resolution, the
    same handle. Anything else (a late answer to another request, or one forged by
    someone guessing at ids) is not taken."""
    if m.request_id != request.request_id:
        return False
    asked = request.body
    if isinstance(asked, ResolutionRequest) and isinstance(m.body, ResolutionResponse):
        return m.body.handle.upper() == asked.handle.upper()
    return True


class _Datagrams(asyncio.DatagramProtocol):
    """Collects the datagrams of the answer to one request."""

    def __init__(self, request: Message) -> None:
        self.request = request
        self.done: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        # One peer, one message wanted: small bounds, so a flood of junk cannot grow it.
        self.reassembler = Reassembler(max_pending_per_client=4, max_pending=4)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.done.done():
            return
        loop = asyncio.get_running_loop()
        try:
            whole = self.reassembler.feed("server", data, loop.time())
            if whole is None:
                return
            m = decode(whole)
        except ProtocolError as exc:
            self.done.set_exception(Unanswered(f"the answer does not decode: {exc.reason}"))
            return
        if answers(self.request, m):  # a late or forged answer is not ours
            self.done.set_result(Answer(m, whole, "udp"))

    def error_received(self, exc: Exception) -> None:
        # On a connected UDP socket an ICMP "port unreachable" arrives here: nothing
        # listens, so there is no point waiting out the timeout.
        if not self.done.done():
            self.done.set_exception(Unanswered(f"refused over UDP: {exc}"))


async def exchange_udp(host: str, port: int, request: Message, timeout: float) -> Answer:
    loop = asyncio.get_running_loop()
    try:
        transport, proto = await loop.create_datagram_endpoint(
            lambda: _Datagrams(request), remote_addr=(host, port)
        )
    except _UNREACHABLE as exc:
        raise Unanswered(f"cannot send to {host}:{port} over UDP: {exc}") from None
    try:
        for gram in split_datagrams(encode(request)):
            transport.sendto(gram)
        async with asyncio.timeout(timeout):
            return await proto.done
    except TimeoutError:
        raise Unanswered(f"no answer from {host}:{port} over UDP in {timeout:g}s") from None
    except _UNREACHABLE as exc:
        raise Unanswered(f"cannot send to {host}:{port} over UDP: {exc}") from None
    finally:
        transport.close()


async def exchange_tcp(host: str, port: int, request: Message, timeout: float) -> Answer:
    """The last message answering ``request`` (an answer may stream with CN set)."""
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(encode(request))
            await writer.drain()
            frames = FrameBuffer()
            while True:
                data = await reader.read(65536)
                if not data:
                    raise Unanswered(f"{host}:{port} closed the connection before answering")
                for frame in frames.feed(data):
                    m = decode(frame)
                    if m.request_id != request.request_id or m.has(OpFlag.CN):
                        continue
                    if not answers(request, m):
                        raise Unanswered(f"{host}:{port} answered about another handle")
                    return Answer(m, frame, "tcp")
    except TimeoutError:
        raise Unanswered(f"no answer from {host}:{port} over TCP in {timeout:g}s") from None
    except ProtocolError as exc:
        raise Unanswered(f"the answer from {host}:{port} does not decode: {exc.reason}") from None
    except _UNREACHABLE as exc:
        raise Unanswered(f"cannot reach {host}:{port} over TCP: {exc}") from None
    finally:
        if writer is not None:
            writer.close()
