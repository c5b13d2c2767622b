"""The miss path's own Redis connection (resolver/lean_redis.py), against a real Redis
and, for the failures a real one will not stage, loopback servers of the test's own."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

import pytest
import redis
from redis import exceptions as rx

from idnode.resolver.lean_redis import LeanRedis, pack


def _lean(url: str, **kw: float) -> LeanRedis:
    client = LeanRedis.from_url(url, **kw)
    assert client is not None, url
    return client


def test_pack_is_what_redis_py_sends() -> None:
    args = (b"EVALSHA", "abc", 2, "k\u00e9", b"\x00\r\n", 3600)
    theirs = redis.Connection().pack_command(*args)  # type: ignore[no-untyped-call]
    assert pack(args) == b"".join(theirs)


def test_from_url_takes_plain_tcp_only() -> None:
    c = LeanRedis.from_url("redis://u%40x:p%3Aw@127.0.0.1:6390/4")
    assert c is not None
    assert (c.host, c.port, c.db, c.username, c.password) == ("127.0.0.1", 6390, 4, "u@x", "p:w")
    c = LeanRedis.from_url("redis://:secret@localhost")
    assert c is not None
    assert (c.port, c.db, c.username, c.password) == (6379, 0, None, "secret")
    # as redis-py reads them: an empty user or password is none, the host is unquoted
    c = LeanRedis.from_url("redis://someone@%31%32%37.0.0.1/2")
    assert c is not None
    assert (c.host, c.db, c.username, c.password) == ("127.0.0.1", 2, "someone", None)
    c = LeanRedis.from_url("redis://:@127.0.0.1")
    assert c is not None
    assert (c.username, c.password) == (None, None)
    # what stays with redis-py
    for url in (
        "rediss://127.0.0.1:6379/0",
        "unix:///run/redis.sock",
        "redis://127.0.0.1:6379/0?socket_timeout=3",
        "redis://127.0.0.1:6379/notadb",
        "redis://127.0.0.1:6379/\u00b2",  # a digit to str.isdigit, not to int()
    ):
        assert LeanRedis.from_url(url) is None, url


def test_commands_pipelined_on_one_connection_get_their_own_replies(
    redis_url: str, redis_namespace: str
) -> None:
    raw = redis.Redis.from_url(redis_url)
    keys = [f"{redis_namespace}:k{i}" for i in range(300)]
    raw.mset({k: f"v{i}".encode() + b"\x00\r\n" for i, k in enumerate(keys)})

    async def go() -> None:
        c = _lean(redis_url)
        try:
            # 300 GETs in flight at once, then MGETs with a missing key among them
            got = await asyncio.gather(*(c.call(b"GET", k) for k in keys))
            assert got == [f"v{i}".encode() + b"\x00\r\n" for i in range(300)]
            many = await c.call(b"MGET", keys[0], f"{redis_namespace}:absent", keys[299])
            assert many == [b"v0\x00\r\n", None, b"v299\x00\r\n"]
            assert c.connects == 1
        finally:
            await c.close()

    asyncio.run(go())


def test_an_error_reply_raises_and_the_connection_goes_on(
    redis_url: str, redis_namespace: str
) -> None:
    async def go() -> None:
        c = _lean(redis_url)
        key = f"{redis_namespace}:text"
        try:
            await c.call(b"SET", key, b"not a number")
            with pytest.raises(rx.ResponseError, match="not an integer"):
                await c.call(b"INCR", key)
            assert await c.call(b"GET", key) == b"not a number"
            assert c.connects == 1
        finally:
            await c.close()

    asyncio.run(go())


def test_evalsha_of_a_script_redis_does_not_hold_runs_it_and_keeps_it(
    redis_url: str, redis_namespace: str
) -> None:
    import hashlib

    # a script no one has loaded: its body carries a fresh token
    script = f"-- {secrets.token_hex(8)}\nreturn redis.call('SET', KEYS[1], ARGV[1])"
    sha = hashlib.sha1(script.encode()).hexdigest()
    raw = redis.Redis.from_url(redis_url)
    assert raw.script_exists(sha) == [False]
    key = f"{redis_namespace}:scripted"

    async def go() -> None:
        c = _lean(redis_url)
        try:
            assert await c.evalsha(sha, script, [key], [b"one"]) == b"OK"
            assert raw.get(key) == b"one"
            assert raw.script_exists(sha) == [True]  # EVAL kept it: the next call is by SHA
            assert await c.evalsha(sha, script, [key], [b"two"]) == b"OK"
            assert raw.get(key) == b"two"
        finally:
            await c.close()

    asyncio.run(go())


def test_select_and_auth_from_the_url(redis_url: str, redis_namespace: str) -> None:
    raw = redis.Redis.from_url(redis_url)
    user, password = f"idnode-test-{secrets.token_hex(4)}", secrets.token_hex(12)
    raw.acl_setuser(
        user,
        enabled=True,
        passwords=[f"+{password}"],
        keys=[f"{redis_namespace}:*"],
        commands=["+get", "+set", "+select", "+auth", "+acl|whoami"],
    )
    lone = f"idnode-test-{secrets.token_hex(4)}"  # a user with no password
    raw.acl_setuser(lone, enabled=True, nopass=True, commands=["+acl|whoami", "+auth"])
    u = urlsplit(redis_url)
    key = f"{redis_namespace}:in-db-5"
    try:
        redis.Redis(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=5).set(key, b"five")

        async def go() -> None:
            c = _lean(f"redis://{user}:{password}@{u.hostname}:{u.port or 6379}/5")
            wrong = _lean(f"redis://{user}:wrong@{u.hostname}:{u.port or 6379}/5")
            alone = _lean(f"redis://{lone}@{u.hostname}:{u.port or 6379}")
            try:
                assert await c.call(b"ACL", b"WHOAMI") == user.encode()
                # a user without a password logs in as that user, as with redis-py
                assert await alone.call(b"ACL", b"WHOAMI") == lone.encode()
                assert await c.call(b"GET", key) == b"five"  # AUTH as the user, SELECT 5
                with pytest.raises(rx.ResponseError, match="NOPERM"):  # the ACL holds in here
                    await c.call(b"DEL", key)
                with pytest.raises(rx.ResponseError):
                    await wrong.call(b"GET", key)
            finally:
                await c.close()
                await wrong.close()
                await alone.close()

        asyncio.run(go())
    finally:
        raw.acl_deluser(user, lone)
        redis.Redis(host=u.hostname or "127.0.0.1", port=u.port or 6379, db=5).delete(key)


async def _serve(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def test_a_redis_that_does_not_answer_times_out_and_the_next_command_connects_again() -> None:
    async def go() -> None:
        accepted: list[asyncio.StreamWriter] = []

        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            accepted.append(w)  # reads nothing, answers nothing

        server, port = await _serve(silent)
        c = LeanRedis("127.0.0.1", port, timeout=0.2)
        try:
            first = asyncio.ensure_future(c.call(b"GET", "a"))
            second = asyncio.ensure_future(c.call(b"GET", "b"))
            for fut in (first, second):  # both fail: the stream is out of step
                with pytest.raises(rx.TimeoutError):
                    await fut
            with pytest.raises(rx.TimeoutError):
                await c.call(b"GET", "c")
            assert c.connects == 2 and len(accepted) == 2
        finally:
            await c.close()
            server.close()

    asyncio.run(go())


def test_a_connection_that_drops_fails_its_commands_and_the_next_reconnects() -> None:
    async def go() -> None:
        served = 0

        async def once(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            nonlocal served
            served += 1
            await r.readuntil(b"\r\n")  # the first line of a command
            if served == 1:
                w.close()  # the first connection drops without a reply
                return
            w.write(b"$2\r\nok\r\n")
            await w.drain()

        server, port = await _serve(once)
        c = LeanRedis("127.0.0.1", port, timeout=2.0)
        try:
            with pytest.raises(rx.ConnectionError):
                await c.call(b"GET", "a")
            assert await c.call(b"GET", "b") == b"ok"
            assert c.connects == 2
        finally:
            await c.close()
            server.close()

    asyncio.run(go())


def test_garbage_or_unasked_replies_fail_the_connection_not_the_caller_forever() -> None:
    async def go() -> None:
        async def garbage(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await r.readuntil(b"\r\n")
            w.write(b"?this is not RESP\r\n")
            await w.drain()

        server, port = await _serve(garbage)
        c = LeanRedis("127.0.0.1", port, timeout=2.0)
        try:
            with pytest.raises(rx.InvalidResponse):
                await c.call(b"GET", "a")
        finally:
            await c.close()
            server.close()

        async def chatty(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write(b"+unasked\r\n")  # before any command
            await w.drain()
            await asyncio.sleep(5)

        server, port = await _serve(chatty)
        c = LeanRedis("127.0.0.1", port, timeout=2.0)
        try:
            proto = await c._connect()
            await asyncio.sleep(0.1)
            # a reply with no command waiting: the stream is out of step, the connection goes
            assert isinstance(proto.lost, rx.InvalidResponse)
            assert proto.transport is not None and proto.transport.is_closing()
        finally:
            await c.close()
            server.close()

    asyncio.run(go())


def test_nothing_listening_is_a_connection_error() -> None:
    async def go() -> None:
        c = LeanRedis("127.0.0.1", 1, timeout=0.5)  # nothing listens on port 1
        with pytest.raises(rx.ConnectionError, match="cannot connect"):
            await c.call(b"GET", "a")
        await c.close()

    asyncio.run(go())


def test_a_connect_no_caller_waited_for_is_not_reused_once_lost(redis_url: str) -> None:
    async def go() -> None:
        c = _lean(redis_url)
        try:
            # the caller gives up while connecting; the connect goes on and succeeds
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0):
                    await c.call(b"PING")
            await asyncio.sleep(0.2)
            first = c._proto
            assert first is not None and c.connects == 1
            first.fail(rx.ConnectionError("cut"))  # that connection is lost
            assert await c.call(b"PING") == b"PONG"  # a new one, at once
            assert c.connects == 2 and c._proto is not first
        finally:
            await c.close()

    asyncio.run(go())


def test_the_client_bench_measures_both_clients(redis_url: str) -> None:
    from idnode.loadtest.redis_client_bench import run

    report = asyncio.run(run(redis_url, keys=2, commands=20, rounds=2))
    for command in ("mget", "fill"):
        side = report[command]
        assert len(side["rounds_us"]["redis_py"]) == len(side["rounds_us"]["lean"]) == 2
        assert side["redis_py_us"] > 0 and side["lean_us"] > 0
        ratio = side["lean_us"] / side["redis_py_us"]
        assert abs(side["lean_to_redis_py"] - ratio) < 0.01  # the ratio of the best rounds
    leftover = redis.Redis.from_url(redis_url).keys("idnode-bench-*")
    assert leftover == []  # it deletes what it wrote


def test_a_command_given_up_on_closes_its_connection() -> None:
    """The read coalescer gives up on a read sooner than the command's own timeout: a
    Redis that stopped answering must still be left, not queued behind."""

    async def go() -> None:
        async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)

        server, port = await _serve(silent)
        c = LeanRedis("127.0.0.1", port, timeout=5.0)
        try:
            other = asyncio.ensure_future(c.call(b"GET", "b"))
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await c.call(b"GET", "a")
            proto = c._proto
            assert proto is not None and isinstance(proto.lost, rx.TimeoutError)
            with pytest.raises(rx.TimeoutError):  # the command beside it failed with it
                await other
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await c.call(b"GET", "c")
            assert c.connects == 2  # that one went over a new connection
        finally:
            await c.close()
            server.close()

    asyncio.run(go())


def test_a_command_on_a_connection_already_lost_fails_at_once(redis_url: str) -> None:
    async def go() -> None:
        c = _lean(redis_url, timeout=30.0)
        try:
            proto = await c._connect()
            proto.fail(rx.ConnectionError("cut"))
            fut = proto.send(pack((b"PING",)), asyncio.get_running_loop())
            assert fut.done() and isinstance(fut.exception(), rx.ConnectionError)
        finally:
            await c.close()

    asyncio.run(go())


def test_after_close_calls_fail_and_nothing_reconnects(redis_url: str) -> None:
    async def go() -> None:
        c = _lean(redis_url)
        assert await c.call(b"PING") == b"PONG"
        await c.close()
        with pytest.raises(rx.ConnectionError, match="closed"):
            await c.call(b"PING")
        assert c.connects == 1 and c._proto is None

    asyncio.run(go())


def test_a_failed_connect_no_caller_waited_for_is_not_logged_as_unretrieved() -> None:
    import gc

    async def go() -> None:
        async def mute(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            await asyncio.sleep(30)  # takes the connection, never answers AUTH

        errors: list[str] = []
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, ctx: errors.append(str(ctx.get("message"))))
        server, port = await _serve(mute)
        c = LeanRedis("127.0.0.1", port, password="pw", timeout=0.2)
        try:
            with pytest.raises(TimeoutError):  # the caller leaves before AUTH times out
                async with asyncio.timeout(0.05):
                    await c.call(b"GET", "a")
            await asyncio.sleep(0.4)  # the connect fails (AUTH unanswered) with no one there
            with pytest.raises(rx.TimeoutError, match="AUTH"):  # a new connect, same fate
                await c.call(b"GET", "b")
            gc.collect()
            await asyncio.sleep(0)
            assert errors == []
        finally:
            await c.close()
            server.close()

    asyncio.run(go())
