"""Handle protocol over TCP.

A connection stays open and every request on it is answered: the IDIS SDK sends
many requests without the keep-connection flag, the Teleinfo SDK pipelines by
request id and sends idle heartbeats. Answers may leave out of order; clients
match them by request id. An idle connection is closed after a timeout. The answers
to the requests of one read leave in writes of about FLUSH_BYTES: a pipelining client
gets a few segments for a burst, not a send per answer, and its first answers while the
rest are still being made.

Memory stays bounded whatever a client does. Requests are taken from the stream one
at a time; while a connection's answers are not being read (its write buffer above
HIGH_WATER) or MAX_IN_FLIGHT of its requests are being answered, the rest stay unparsed
and the connection is not read, so TCP flow control holds the client back. A request
still arriving, or answers left unread, for longer than the slow timeout close the
connection; so do connections past the per-client cap and unfinished requests past the
worker's byte budget (connlimits.ByteBudget: small requests get room that large ones
cannot take).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from .codec import FrameBuffer, ProtocolError
from .connlimits import ByteBudget, ConnectionLimits
from .handle_admin import Connection
from .handle_service import HandleService

log = logging.getLogger("idnode.tcp")

HIGH_WATER = 256 * 1024  # unread answers queued for one client before its reading pauses
LOW_WATER = 64 * 1024
# Answers gathered before a write. Holding a whole read's answers (a pipelining client's
# window of 256 is ~50 KB of them) kept the client idle until the last was made, and
# the worker idle while the client then worked through them: one connection's closed
# loop ran at 77k answers/s. Writing every ~40 answers lets both work at once: 112-115k/s
# at 8 KiB, 106k at 16 KiB, 102k at 2 KiB (`idnode loadtest peer --doors tcp`, 100k
# handles, window 256, one round each, 2026-11-27).
FLUSH_BYTES = 8 * 1024
MAX_IN_FLIGHT = 64  # requests of one connection answered at once (pipelining clients)


class TcpConnection(asyncio.Protocol):
    def __init__(self, door: TcpDoor) -> None:
        self.door = door
        self.frames = FrameBuffer()
        self.transport: asyncio.Transport | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_active = time.monotonic()
        self.client = ""
        self.state = Connection()  # an IDIS login authorises this connection until it closes
        self.admitted = False
        self.held = 0  # bytes of self.frames counted in the door's budget
        self.partial_since: float | None = None  # an unfinished request is arriving
        self.unread_since: float | None = None  # the client is not reading its answers
        self.reading = True
        # While _work answers the requests of one read, their answers gather here and
        # leave about FLUSH_BYTES at a time: a few sends for a pipelined burst, not one
        # per answer, and the first of them while the rest are still being made.
        self._out: list[bytes] | None = None
        self._out_bytes = 0
        # Something _blocked reads may have changed (a write, a task): ask it again.
        # Asked after every request it cost ~3% of an L1-hot answer.
        self._recheck = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        if not self.door.limits.admit(self.client, "tcp"):
            transport.close()
            return
        self.admitted = True
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)  # type: ignore[attr-defined]
        self.door.connections.add(self)
        self.door.start_sweeping()

    def check(self, now: float) -> None:
        """Close the connection if it idles, or is slow to send a request or to read."""
        if self.transport is None or self.transport.is_closing():
            return
        door = self.door
        slow = door.slow_timeout
        if self.partial_since is not None and now - self.partial_since >= slow:
            door.limits.report.bite(f"tcp: a request unfinished for {slow:g} s", self.client)
            self.transport.close()
        elif self.unread_since is not None and now - self.unread_since >= slow:
            door.limits.report.bite(f"tcp: answers unread for {slow:g} s", self.client)
            self.transport.abort()  # close() would wait for the unread answers to leave
        elif now - self.last_active >= door.idle_timeout and not self.tasks and not self.frames:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.last_active = time.monotonic()
        if self.door.closing:
            return
        self.frames.append(data)
        self._work()

    def _blocked(self) -> bool:
        t = self.transport
        return (
            t is None
            or t.is_closing()
            or self.unread_since is not None
            or t.get_write_buffer_size() > HIGH_WATER
            or len(self.tasks) >= MAX_IN_FLIGHT
        )

    def _work(self) -> None:
        """Answer the whole requests received, as long as the client keeps up."""
        took = False
        outer = self._out is None  # not called from inside another _work's answers
        if outer:
            self._out = []
        try:
            blocked = self._blocked()
            while not blocked:
                try:
                    frame = self.frames.next()
                except ProtocolError as exc:
                    self._flush()
                    self._unframeable(exc)
                    return
                if frame is None:
                    break
                took = True
                self._answer(frame)
                if self._recheck:
                    self._recheck = False
                    blocked = self._blocked()
        finally:
            if outer:
                self._flush()
                self._out = None
        if self.transport is None or self.transport.is_closing():
            return
        pending = len(self.frames)
        if not pending:
            self.partial_since = None
        elif took or self.partial_since is None:
            self.partial_since = time.monotonic()
        if not self._account(pending):
            return
        # Read on while nothing holds us back; else let TCP flow control stop the client.
        want = not self._blocked()
        if want != self.reading:
            self.reading = want
            if want:
                self.transport.resume_reading()
            else:
                self.transport.pause_reading()

    def _account(self, pending: int) -> bool:
        """Keep the worker's budget of unfinished requests; False if this connection was
        closed for going over it with a large one."""
        door = self.door
        grow = pending - self.held
        if grow > 0 and not door.buffers.take(grow, pending):
            door.limits.report.bite(
                f"tcp: {door.buffers.limit >> 20} MiB of unfinished requests in this worker",
                self.client,
            )
            assert self.transport is not None
            self.transport.abort()
            return False
        if grow < 0:
            door.buffers.give(-grow)
        self.held = pending
        return True

    def _unframeable(self, exc: ProtocolError) -> None:
        # The stream can no longer be framed: say why if we can, then hang up.
        reply = self.door.service.malformed(self.frames.head(64), exc, "tcp")
        if reply is not None and self.transport is not None:
            self.transport.write(reply)
        if self.transport is not None:
            self.transport.close()

    def _answer(self, frame: bytes) -> None:
        r = self.door.service.respond(frame, "tcp", self.client, self.state)
        if r is None:
            return
        if isinstance(r, bytes):
            self._write(r)
            return
        t = asyncio.get_running_loop().create_task(self._finish(r))
        self.tasks.add(t)
        t.add_done_callback(self._done)
        self._recheck = True

    def _done(self, t: asyncio.Task[None]) -> None:
        self.tasks.discard(t)
        # A slot is free: take the next request waiting, or read again if reading was
        # paused for want of a slot (with nothing buffered, nothing else would resume it).
        if (self.frames or not self.reading) and not self.door.closing:
            self._work()

    async def _finish(self, r: Any) -> None:
        try:
            reply = await r
        except Exception:
            log.exception("error answering a TCP request")
            return
        if reply is not None:
            self._write(reply)

    def _write(self, reply: bytes) -> None:
        out = self._out
        if out is not None:  # inside _work: leaves with the burst's other answers
            out.append(reply)
            self._out_bytes += len(reply)
            if self._out_bytes >= FLUSH_BYTES:  # also keeps _blocked's view of the buffer true
                self._flush()
            return
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(reply)
            self.last_active = time.monotonic()

    def _flush(self) -> None:
        out = self._out
        if not out:
            return
        self._out = []
        self._out_bytes = 0
        self._recheck = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))
            self.last_active = time.monotonic()

    def pause_writing(self) -> None:
        self.unread_since = time.monotonic()
        if self.reading and self.transport is not None and not self.transport.is_closing():
            self.reading = False
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.unread_since = None
        self.last_active = time.monotonic()
        if not self.door.closing:
            self._work()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.admitted:
            return
        self.admitted = False
        self.door.limits.release(self.client)
        self.door.buffers.give(self.held)
        self.held = 0
        self.door.connections.discard(self)
        for t in self.tasks:
            t.cancel()


class TcpDoor:
    def __init__(
        self,
        service: HandleService,
        *,
        idle_timeout: float = 120.0,
        slow_timeout: float = 30.0,
        limits: ConnectionLimits | None = None,
        buffers: ByteBudget | None = None,
    ) -> None:
        self.service = service
        self.idle_timeout = idle_timeout
        self.slow_timeout = slow_timeout
        self.limits = limits or ConnectionLimits(0, 1 << 30)
        self.buffers = buffers or ByteBudget(64 * 1024 * 1024)
        self.connections: set[TcpConnection] = set()
        self.closing = False
        self.server: asyncio.Server | None = None
        self._sweep: asyncio.Task[None] | None = None

    def protocol(self) -> TcpConnection:
        return TcpConnection(self)

    def start_sweeping(self) -> None:
        if self._sweep is None and not self.closing:
            self._sweep = asyncio.get_running_loop().create_task(self._sweeping())

    async def _sweeping(self) -> None:
        """One timer for every connection: idle, slow and unread ones are closed."""
        tick = min(1.0, max(0.05, min(self.idle_timeout, self.slow_timeout) / 4))
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for c in list(self.connections):
                c.check(now)

    async def drain_and_close(self, grace: float) -> None:
        self.closing = True
        if self._sweep is not None:
            self._sweep.cancel()
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
