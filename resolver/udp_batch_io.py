"""The Handle UDP door's batched datagram I/O: one recvmmsg per wakeup, one sendmmsg per
batch of answers, through the optional compiled module ``_udp_batch_io`` (udp_batch_io.c).

The event loop's DatagramTransport (uvloop's) makes one recvfrom system call and one Python
callback per datagram, and one sendto per answer; on the hot path (answers to L1 hits) that
is a large share of the node's CPU per answer. ``BatchedUdp`` does what the door needs of
that transport over the same socket, read and written by the module:

- the socket is watched with ``loop.add_reader``; each wakeup reads at most MAX_BATCH
  datagrams with one call and hands them over together (the door answers each as before);
- ``send_many`` sends a list of answers with one call. What the kernel's send buffer does
  not take (EAGAIN, ENOBUFS) is kept, in order, in a backlog sent when the socket is
  writable (``loop.add_writer``), as the transport queues it; unlike the transport's queue
  the backlog is bounded (``backlog_bytes``): past it answers are dropped and counted, so a
  flood costs bounded memory;
- ``close`` stops reading; the backlog still goes out (``wait_closed`` bounds the wait),
  then the socket is closed.

``choose`` decides, once per worker, which I/O the door uses: this, when the module is
built and the ``udp_batch_io`` setting is on; else the transport.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import deque
from collections.abc import Callable
from typing import Any

try:  # built by `pip install` where a C compiler and the Python headers are (Linux)
    from . import _udp_batch_io
except ImportError as exc:
    _udp_batch_io = None  # type: ignore[assignment]
    MISSING = f"the compiled module idnode.resolver._udp_batch_io is not built here ({exc})"
else:
    MISSING = ""

MAX_BATCH = 64  # datagrams per recvmmsg call, and per sendmmsg call (the module's limit)
BACKLOG_BYTES = 4 * 1024 * 1024  # answers waiting for the send buffer, per worker
ITEM_OVERHEAD = 128  # what one queued answer costs beside its bytes (tuple, deque slot)
WRITE_SLICE = 1024  # backlog answers handed to one send_batch call

Item = tuple[bytes, Any]  # (datagram, address as the socket module gives it)


def choose(enabled: bool) -> tuple[bool, str]:
    """Whether the UDP door reads and sends in batches, and what the start-up log says."""
    if not enabled:
        return False, "the event loop's datagram transport (udp_batch_io is off)"
    if _udp_batch_io is None:
        return False, f"the event loop's datagram transport: {MISSING}"
    return True, (
        f"batches of up to {MAX_BATCH} datagrams per recvmmsg and sendmmsg call (udp_batch_io)"
    )


def module_counts() -> dict[str, int]:
    """The compiled module's counts in this process: datagrams dropped because longer than
    the read buffer ("truncated"; UDP has none longer), from an address neither IPv4 nor
    IPv6 ("bad_address"), refused by the kernel when sent ("send_errors"), or items that
    were no (data, address) pair to send ("bad_items": a bug of the caller)."""
    if _udp_batch_io is None:
        return {"truncated": 0, "bad_address": 0, "send_errors": 0, "bad_items": 0}
    return _udp_batch_io.stats()


class BatchedUdp:
    """What the UDP door needs of a DatagramTransport, over a UDP socket read with
    recvmmsg and written with sendmmsg (see the module's docstring). The module must be
    built (``choose``)."""

    def __init__(
        self,
        sock: socket.socket,
        on_batch: Callable[[list[Item]], None],
        on_error: Callable[[Exception], None],
        *,
        backlog_bytes: int = BACKLOG_BYTES,
        batch: int = MAX_BATCH,
    ) -> None:
        assert _udp_batch_io is not None, MISSING
        self.sock = sock
        self.fd = sock.fileno()
        self.family = int(sock.family)
        self.on_batch, self.on_error = on_batch, on_error
        self.batch = batch
        self.backlog_max = backlog_bytes
        self.backlog_bytes = 0  # what the backlog is counted at: bytes + ITEM_OVERHEAD each
        self.dropped = 0  # datagrams not queued: the backlog had no room for their call
        self.abandoned = 0  # answers still queued when close() stopped waiting
        self._backlog: deque[Item] = deque()
        self._loop = asyncio.get_running_loop()
        self._writing = False  # add_writer is on
        self._closing = False
        self._closed = False  # the socket is closed: its descriptor may be another's now
        self._drained: asyncio.Future[None] | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._loop.add_reader(self.fd, self._readable)

    def _readable(self) -> None:
        if self._closing:
            return
        try:
            batch = _udp_batch_io.recv_batch(self.fd, self.batch)
        except OSError as exc:  # e.g. an ICMP error reported on the socket: read on
            self.on_error(exc)
            return
        if batch:
            self.on_batch(batch)

    def send_many(self, items: list[Item]) -> None:
        """Send ``items`` with one system call; queue what the send buffer does not take."""
        if self._closed or not items:
            return
        if not self._backlog:  # else they queue behind it: answers keep their order
            try:
                sent = _udp_batch_io.send_batch(self.fd, self.family, items)
            except OSError as exc:  # the socket's own error (EBADF): nothing more goes
                self.on_error(exc)
                return
            if sent == len(items):
                return
            items = items[sent:]
        self._queue(items)

    def sendto(self, data: bytes, addr: Any) -> None:
        self.send_many([(data, addr)])

    def _queue(self, items: list[Item]) -> None:
        """Queue ``items`` whole, or drop them whole (counted as datagrams) when the backlog
        has no room for all: the datagrams of a multi-datagram answer are consecutive
        items of one call, and a part of an answer would be bandwidth spent on a message
        its client can never put together."""
        cost = sum(len(item[0]) for item in items) + ITEM_OVERHEAD * len(items)
        if cost > self.backlog_max - self.backlog_bytes:
            self.dropped += len(items)
            return
        self._backlog.extend(items)
        self.backlog_bytes += cost
        if not self._writing:
            self._loop.add_writer(self.fd, self._writable)
            self._writing = True

    def _writable(self) -> None:
        backlog = self._backlog
        while backlog:
            part = list(itertools.islice(backlog, WRITE_SLICE))
            try:
                sent = _udp_batch_io.send_batch(self.fd, self.family, part)
            except Exception as exc:  # the socket's own error, or out of memory: the
                # backlog cannot go out, and a writer left on would try again forever
                self.on_error(exc)
                self._abandon()
                break
            for _ in range(sent):
                self.backlog_bytes -= len(backlog.popleft()[0]) + ITEM_OVERHEAD
            if sent < len(part):
                return  # the buffer is full again: wait for the next wakeup
        self._loop.remove_writer(self.fd)
        self._writing = False
        if self._closing:
            self._close_socket()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Stop reading; close the socket once the backlog is sent (see wait_closed)."""
        if self._closing:
            return
        self._closing = True
        self._loop.remove_reader(self.fd)
        if not self._backlog:
            self._close_socket()

    def abort(self) -> None:
        self.close()
        self._abandon()
        self._close_socket()

    async def wait_closed(self, timeout: float) -> None:
        """Wait up to ``timeout`` s for the backlog to go out after close(); then drop
        what is left (counted in ``abandoned``) and close the socket."""
        if self._closed:
            return
        if self._drained is None:
            self._drained = self._loop.create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._drained), max(0.0, timeout))
        except TimeoutError:
            self.abort()

    def _abandon(self) -> None:
        self.abandoned += len(self._backlog)
        self._backlog.clear()
        self.backlog_bytes = 0

    def _close_socket(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writing:
            self._loop.remove_writer(self.fd)
            self._writing = False
        self.sock.close()
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
