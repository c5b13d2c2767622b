"""Handle protocol over TCP.

A connection stays open and every request on it is answered: the IDIS SDK sends
many requests without the keep-connection flag, the Teleinfo SDK pipelines by
request id and sends idle heartbeats. Answers may leave out of order; clients
match them by request id. An idle connection is closed after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .codec import FrameBuffer, ProtocolError
from .handle_admin import Connection
from .handle_service import HandleService

log = logging.getLogger("idnode.tcp")


class TcpConnection(asyncio.Protocol):
    def __init__(self, door: TcpDoor) -> None:
        self.door = door
        self.frames = FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_active = time.monotonic()
        self.client = ""
        self.state = Connection()  # an IDIS login authorises this connection until it closes
        self._idle: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        self.door.connections.add(self)
        self._arm_idle()

    def _arm_idle(self) -> None:
        timeout = self.door.idle_timeout
        self._idle = asyncio.get_running_loop().call_later(timeout, self._check_idle)

    def _check_idle(self) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        idle = time.monotonic() - self.last_active
        if idle >= self.door.idle_timeout and not self.tasks:
            self.transport.close()
        else:
            self._idle = asyncio.get_running_loop().call_later(
                max(0.1, self.door.idle_timeout - idle), self._check_idle
            )

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.door.closing:
            return
        try:
            frames = self.frames.feed(data)
        except ProtocolError as exc:
            # The stream can no longer be framed: say why if we can, then hang up.
            reply = self.door.service.malformed(data, exc, "tcp")
            if reply is not None and self.transport is not None:
                self.transport.write(reply)
            if self.transport is not None:
                self.transport.close()
            return
        for frame in frames:
            r = self.door.service.respond(frame, "tcp", self.client, self.state)
            if r is None:
                continue
            if isinstance(r, bytes):
                self._write(r)
                continue
            t = asyncio.get_running_loop().create_task(self._finish(r))
            self.tasks.add(t)
            t.add_done_callback(self.tasks.discard)

    async def _finish(self, r: Any) -> None:
        try:
            reply = await r
        except Exception:
            log.exception("error answering a TCP request")
            return
        if reply is not None:
            self._write(reply)

    def _write(self, reply: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
            self.last_active = time.monotonic()

    def connection_lost(self, exc: Exception | None) -> None:
        self.door.connections.discard(self)
        if self._idle is not None:
            self._idle.cancel()
        for t in self.tasks:
            t.cancel()


class TcpDoor:
    def __init__(self, service: HandleService, *, idle_timeout: float = 120.0) -> None:
        self.service = service
        self.idle_timeout = idle_timeout
        self.connections: set[TcpConnection] = set()
        self.closing = False
        self.server: asyncio.Server | None = None

    def protocol(self) -> TcpConnection:
        return TcpConnection(self)

    async def drain_and_close(self, grace: float) -> None:
        self.closing = True
        if self.server is not None:
            self.server.close()
        tasks = {t for c in self.connections for t in c.tasks}
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        for c in list(self.connections):
            if c.transport is not None:
                c.transport.close()
        if self.server is not None:
            await self.server.wait_closed()
