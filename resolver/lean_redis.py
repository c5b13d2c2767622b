"""One Redis connection for the miss path's reads and fills, without redis-py's client.

redis-py's asyncio client spends ~90 µs of CPU per command on top of the socket work
(its connection pool, retry wrapper, and packing each argument in Python). Measured with
``python -m idnode.loadtest.redis_client_bench --cpu 0``: an MGET of one key cost the
client 150-170 µs of CPU through redis-py and 63-74 µs here (0.41 of it), the fill
script 0.39 of it, with the same hiredis parser. On the 10M miss path every L1 miss
ends in a fill and often a read, and the node's CPU is the limit there.

What it does: RESP2 commands pipelined on one TCP connection (replies come in order,
each waits on a future), AUTH and SELECT from the URL, a timeout per command and per
connect. What it does not: TLS and Unix sockets (``from_url`` says None, and the tier
keeps redis-py for those), RESP3, pub/sub, clusters. Its errors are redis-py's
exception classes, so callers handle both alike.

A command that times out, or that its caller gives up on before Redis answers (the
read coalescer gives up after ``l2_timeout``), closes the connection, as redis-py does:
a Redis that stopped answering is then found at once, not after the replies of every
abandoned command pile up. Every command waiting on it fails, and the next one
connects again.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import hiredis
from redis import exceptions as rx
from redis.connection import parse_url

Arg = bytes | str | int
_URL_PARTS = {"host", "port", "db", "username", "password"}  # what from_url passes on


def pack(args: tuple[Arg, ...]) -> bytes:
    """One RESP array of bulk strings."""
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if isinstance(a, str):
            a = a.encode()
        elif isinstance(a, int):
            a = b"%d" % a
        out.append(b"$%d\r\n" % len(a))
        out.append(a)
        out.append(b"\r\n")
    return b"".join(out)


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.reader = hiredis.Reader(protocolError=rx.InvalidResponse, replyError=rx.ResponseError)
        self.waiting: collections.deque[asyncio.Future[Any]] = collections.deque()
        self.transport: asyncio.Transport | None = None
        self.lost: Exception | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        while True:
            try:
                reply = self.reader.gets()
            except rx.InvalidResponse as exc:  # not RESP: nothing after this can be trusted
                self.fail(exc)
                return
            if reply is False:
                return
            if not self.waiting:  # a reply nobody asked for: the stream is out of step
                self.fail(rx.InvalidResponse("redis sent a reply no command asked for"))
                return
            fut = self.waiting.popleft()
            if fut.done():  # its caller gave up (cancelled)
                continue
            if isinstance(reply, rx.ResponseError):
                fut.set_exception(_error(reply))
            else:
                fut.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(rx.ConnectionError(f"connection to redis lost ({exc or 'closed'})"))

    def fail(self, exc: Exception) -> None:
        """Close and fail every command waiting with ``exc``."""
        if self.lost is None:
            self.lost = exc
        if self.transport is not None:
            self.transport.abort()
        while self.waiting:
            fut = self.waiting.popleft()
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: its caller may be gone

    def send(self, packed: bytes, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Any]:
        fut = loop.create_future()
        if self.lost is not None:  # lost since it was handed out: fail now, not at the timeout
            fut.set_exception(self.lost)
            return fut
        self.waiting.append(fut)
        assert self.transport is not None
        self.transport.write(packed)
        return fut


def _error(reply: rx.ResponseError) -> rx.ResponseError:
    text = str(reply)
    if text.startswith("NOSCRIPT"):
        return rx.NoScriptError(text)
    return reply


class LeanRedis:
    def __init__(
        self,
        host: str,
        port: int = 6379,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 0.5,
        connect_timeout: float = 2.0,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self._proto: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False
        self.connects = 0  # connections made (for tests and logs)

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.5, connect_timeout: float = 2.0
    ) -> LeanRedis | None:
        """For a ``redis://`` URL; None for what this client does not speak (TLS, Unix
        sockets, query options), which stays with redis-py."""
        if not url.startswith("redis://"):
            return None  # TLS, a Unix socket
        # redis-py's own reading of the URL, so both clients log in to the same place
        kw: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        if set(kw) - _URL_PARTS:
            return None  # query options
        if "host" not in kw or (urlsplit(url).path.strip("/") and "db" not in kw):
            return None  # no host, or a path redis-py does not read as a database number
        return cls(
            kw["host"],
            kw.get("port", 6379),
            db=kw.get("db", 0),
            username=kw.get("username"),
            password=kw.get("password"),
            timeout=timeout,
            connect_timeout=connect_timeout,
        )

    async def call(self, *args: Arg) -> Any:
        """Send one command and wait for its reply (its error raised as redis-py's)."""
        if self._closed:
            raise rx.ConnectionError("the connection to redis was closed")
        proto = self._proto
        if proto is None or proto.lost is not None:
            proto = await self._connect()
        loop = asyncio.get_running_loop()
        fut = proto.send(pack(args), loop)
        timer = loop.call_later(self.timeout, self._expire, proto, fut)
        try:
            return await fut
        except asyncio.CancelledError:
            # Cancelling the caller cancels the future it waits on, unless the reply came
            # first: given up before redis answered (see the module's docstring).
            if fut.cancelled():
                proto.fail(rx.TimeoutError("a command was given up before redis answered"))
            raise
        finally:
            timer.cancel()

    def _expire(self, proto: _Protocol, fut: asyncio.Future[Any]) -> None:
        if not fut.done():
            proto.fail(rx.TimeoutError(f"redis did not answer within {self.timeout:g} s"))

    async def evalsha(self, sha: str, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run a script by its SHA; a Redis that does not hold it (restarted, flushed)
        gets it with EVAL, which also keeps it for the next call."""
        try:
            return await self.call(b"EVALSHA", sha, len(keys), *keys, *args)
        except rx.NoScriptError:
            return await self.call(b"EVAL", script, len(keys), *keys, *args)

    async def _connect(self) -> _Protocol:
        task = self._connecting
        if task is None or task.done():  # a finished connect (whoever awaited it) is spent
            task = self._connecting = asyncio.get_running_loop().create_task(self._open())
            # read, so that a failure no caller stayed for is not logged as unretrieved
            task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            # shielded: one caller giving up must not cancel the others' connect
            return await asyncio.shield(task)
        finally:
            if task.done() and self._connecting is task:
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, proto = await loop.create_connection(_Protocol, self.host, self.port)
        except TimeoutError as exc:
            raise rx.TimeoutError(f"cannot connect to redis at {self.host}:{self.port}") from exc
        except OSError as exc:
            raise rx.ConnectionError(
                f"cannot connect to redis at {self.host}:{self.port} ({exc})"
            ) from exc
        try:
            if self.username is not None:  # redis-py's rule: a user logs in, password or not
                try:
                    await self._hello(proto, b"AUTH", self.username, self.password or "")
                except rx.ResponseError as exc:
                    if "wrong number of arguments" not in str(exc):
                        raise
                    # a Redis before 6 knows no users: the password alone, as redis-py does
                    await self._hello(proto, b"AUTH", self.password or "")
            elif self.password is not None:
                await self._hello(proto, b"AUTH", self.password)
            if self.db:
                await self._hello(proto, b"SELECT", self.db)
            if self._closed:
                raise rx.ConnectionError("the connection to redis was closed")
        except BaseException as exc:
            proto.fail(rx.ConnectionError(f"redis connection not set up ({exc!r})"))
            raise
        self._proto = proto
        self.connects += 1
        return proto

    async def _hello(self, proto: _Protocol, *command: Arg) -> None:
        """One command of a connection's setup (AUTH, SELECT), before anyone uses it."""
        fut = proto.send(pack(command), asyncio.get_running_loop())
        try:
            async with asyncio.timeout(self.timeout):
                await fut
        except TimeoutError as exc:
            raise rx.TimeoutError(
                f"redis did not answer {command[0].decode()} within {self.timeout:g} s"  # type: ignore[union-attr]
            ) from exc

    async def close(self) -> None:
        """Close the connection; calls made after this raise ConnectionError. A connect
        under way finishes and is closed at once (its waiters get ConnectionError)."""
        self._closed = True
        if self._proto is not None:
            self._proto.fail(rx.ConnectionError("the connection to redis was closed"))
            self._proto = None
