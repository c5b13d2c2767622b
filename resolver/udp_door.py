"""Handle protocol over UDP: datagrams in, answers out, multi-packet both ways."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .codec import ProtocolError, Reassembler, split_datagrams
from .codec.codes import ENVELOPE_SIZE, UDP_DATAGRAM_SIZE
from .codec.wire import U32
from .handle_service import HandleService

log = logging.getLogger("idnode.udp")


class UdpDoor(asyncio.DatagramProtocol):
    def __init__(self, service: HandleService, *, max_inflight: int = 10_000) -> None:
        self.service = service
        self.max_inflight = max_inflight
        self.transport: asyncio.DatagramTransport | None = None
        self.reassembler = Reassembler()
        self.tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        self.shed = 0  # requests dropped because too many were in flight
        self._expiry: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._schedule_expiry()

    def _schedule_expiry(self) -> None:
        self.reassembler.expire(time.monotonic())
        self._expiry = asyncio.get_running_loop().call_later(1.0, self._schedule_expiry)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.closing:
            return
        n = len(data)
        # One datagram holds the whole message when its length says so and it is packet 0.
        if n >= ENVELOPE_SIZE and (
            U32.unpack_from(data, 16)[0] != n - ENVELOPE_SIZE or data[12:16] != b"\0\0\0\0"
        ):
            try:
                whole = self.reassembler.feed(addr, data, time.monotonic())
            except ProtocolError as exc:
                reply = self.service.malformed(data, exc, "udp")
                if reply is not None:
                    self._send(reply, addr)
                return
            if whole is None:
                return
            data = whole
        r = self.service.respond(data, "udp", addr[0])
        if r is None:
            return
        if isinstance(r, bytes):
            self._send(r, addr)
            return
        if len(self.tasks) >= self.max_inflight:
            r.close()
            self.shed += 1
            return
        t = asyncio.get_running_loop().create_task(self._finish(r, addr))
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def _finish(self, r: Any, addr: Any) -> None:
        try:
            reply = await r
        except Exception:  # a bug must cost one answer, never the server
            log.exception("error answering a UDP request")
            return
        if reply is not None:
            self._send(reply, addr)

    def _send(self, reply: bytes, addr: Any) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        if len(reply) <= UDP_DATAGRAM_SIZE:
            self.transport.sendto(reply, addr)
            return
        # A reply may hold several messages (a streamed list): each goes out on its own.
        pos = 0
        while pos < len(reply):
            end = pos + ENVELOPE_SIZE + U32.unpack_from(reply, pos + 16)[0]
            for gram in split_datagrams(reply[pos:end]):
                self.transport.sendto(gram, addr)
            pos = end

    def error_received(self, exc: Exception) -> None:
        log.debug("udp error: %s", exc)

    async def drain_and_close(self, grace: float) -> None:
        """Stop taking requests, finish the ones in flight (up to ``grace`` s), close."""
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=grace)
        if self.transport is not None:
            self.transport.close()
