"""One request to one server over UDP or TCP, on the event loop.

resolver/client.py's exchanges block (sockets with timeouts, for the CLI and tools); the
node calls upstream servers from its event loop, so these never block: a datagram
endpoint or a stream, each bounded by one deadline. The answer comes back with its
bytes, because a certified answer is checked over the bytes as they came.

:func:`ask_server` is how the node asks one server of a site, as the reference client
does (the walker, the site peers stage and the health probes all go through it): UDP
first, with half the budget when TCP is there to fall back on, then TCP with what is
left, when UDP gets no answer, is truncated or says "ask over TCP" (RC 2).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from ..client import ClientError
from ..codec import (
    FrameBuffer,
    InterfaceProtocol,
    Message,
    OpCode,
    OpFlag,
    ProtocolError,
    Reassembler,
    ResolutionRequest,
    ResolutionResponse,
    ResponseCode,
    ServerInfo,
    decode,
    encode,
)
from ..codec.bodies import GetSiteInfoRequest
from ..codec.codes import EnvelopeFlag
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
    port: int = 0  # the server's port it came from
    rtt: float = 0.0  # seconds from sending to the answer, over ``transport`` only


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
                    return Answer(m, frame, "tcp", port)
    except TimeoutError:
        raise Unanswered(f"no answer from {host}:{port} over TCP in {timeout:g}s") from None
    except ProtocolError as exc:
        raise Unanswered(f"the answer from {host}:{port} does not decode: {exc.reason}") from None
    except _UNREACHABLE as exc:
        raise Unanswered(f"cannot reach {host}:{port} over TCP: {exc}") from None
    finally:
        if writer is not None:
            writer.close()


# --- one server of a site -----------------------------------------------------------------


def query_ports(server: ServerInfo) -> tuple[int | None, int | None]:
    """The server's Handle query ports (UDP, TCP): the first interface of each protocol
    that serves queries, with a port that is a port (0 or past 65535 is none)."""
    ports: dict[int, int] = {}
    for i in server.interfaces:
        if (
            i.serves_queries
            and i.protocol in (InterfaceProtocol.UDP, InterfaceProtocol.TCP)
            and 0 < i.port <= 0xFFFF
        ):
            ports.setdefault(i.protocol, i.port)
    return ports.get(InterfaceProtocol.UDP), ports.get(InterfaceProtocol.TCP)


def too_big(m: Message) -> bool:
    """An answer over UDP that says "ask over TCP": RC 2 (idnode's UDP door past its
    datagram cap; any other RC 2 TCP says again if it is real) or the truncated flag."""
    return m.response_code == ResponseCode.ERROR or bool(m.envelope_flags & EnvelopeFlag.TRUNCATED)


# Told of every attempt that did not end the exchange: (transport, port, the answer's
# response code or None, why), e.g. the walker's trace of hops.
Tried = Callable[[str, int, int | None, str], None]


async def ask_server(
    server: ServerInfo,
    request: Message,
    budget: float,
    *,
    prefer_udp: bool = True,
    each: bool = False,
    tcp_when_too_big: bool = True,
    sending: Callable[[str], None] | None = None,
    tried: Tried | None = None,
) -> Answer:
    """``request`` to ``server``: UDP first (unless ``prefer_udp`` is False: TCP only),
    TCP when UDP gets no answer or (``tcp_when_too_big``) says "ask over TCP"; within
    ``budget`` seconds in all, UDP getting half when TCP is there to fall back on (a
    silent server costs at most ``budget``), or each transport ``budget`` of its own
    (``each``: a probe, where a UDP loss must not shorten TCP's chance). ``sending`` is
    called before each request goes out (it may raise: a bound on requests). Raises
    Unanswered (the last transport's reason) when no transport answers."""
    udp, tcp = query_ports(server)
    if not prefer_udp:
        udp = None
    if udp is None and tcp is None:
        raise Unanswered(f"server {server.server_id} has no UDP or TCP query interface")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    last: Unanswered | None = None
    for name, port, exchange in (("udp", udp, exchange_udp), ("tcp", tcp, exchange_tcp)):
        if port is None:
            continue
        left = budget if each else deadline - loop.time()
        if name == "udp" and tcp is not None and not each:
            left /= 2
        try:
            if left <= 0:
                raise Unanswered(f"no time left of {budget:g}s for {name}")
            if sending is not None:
                sending(name)
            t0 = time.perf_counter()
            answer = await exchange(server.ip, port, request, left)
        except Unanswered as exc:
            if tried is not None:
                tried(name, port, None, str(exc))
            last = exc
            continue
        answer = replace(answer, port=port, rtt=time.perf_counter() - t0)
        if name == "udp" and tcp is not None and tcp_when_too_big and too_big(answer.message):
            if tried is not None:
                tried(name, port, answer.message.response_code, "asking over TCP")
            continue
        return answer
    raise last or Unanswered(f"no answer in {budget:g}s")


def site_info_request() -> Message:
    """GET_SITE_INFO, as the reference client asks a server which site it is part of
    (protocol 2.10: the site record with the fields 2.10 added)."""
    return Message(
        OpCode.GET_SITE_INFO,
        GetSiteInfoRequest("/"),
        request_id=random.getrandbits(31),
        minor_version=10,
    )
