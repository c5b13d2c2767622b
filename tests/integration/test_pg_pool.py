"""The registry's PostgreSQL connection pool (registry/pg_pool.py), against a real server:
its bound, its waiters, and the connections that come back in a bad state."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from idnode.registry.pg_pool import ConnectionPool, PoolClosed
from idnode.registry.service import unavailable


def connector(url: str, app: str) -> Callable[[], Awaitable[asyncpg.Connection]]:
    """Connections named ``app``, so pg_stat_activity counts exactly this pool's."""

    async def connect() -> asyncpg.Connection:
        return await asyncpg.connect(url, server_settings={"application_name": app})

    return connect


async def backends(url: str, app: str) -> int:
    con = await asyncpg.connect(url)
    try:
        n = await con.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", app
        )
        return int(n)
    finally:
        await con.close()


def test_never_more_connections_than_its_size_and_every_borrower_served(pg_url: str) -> None:
    """60 borrowers at once on a pool of 3: the server sees at most 3 connections, every
    borrower gets one (in turn), and each connection serves one borrower at a time."""
    app = f"idnode-pool-{secrets.token_hex(3)}"

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, app), 3)
        await pool.open(min_size=1)
        assert pool.size == 1
        busy: set[int] = set()
        peak = 0
        pids: set[int] = set()

        async def borrower(i: int) -> int:
            nonlocal peak
            async with pool.acquire() as con:
                assert id(con) not in busy, "a connection lent to two borrowers at once"
                busy.add(id(con))
                peak = max(peak, len(busy))
                pids.add(await con.fetchval("SELECT pg_backend_pid()"))
                got = await con.fetchval("SELECT $1::int FROM pg_sleep(0.01)", i)
                busy.discard(id(con))
                return int(got)

        assert await asyncio.gather(*(borrower(i) for i in range(60))) == list(range(60))
        assert peak == 3 and len(pids) == 3 and pool.size == 3 and pool.idle == 3
        assert await backends(pg_url, app) == 3
        await pool.close()
        assert pool.size == 0
        for _ in range(50):  # the server drops the backends a moment after the goodbye
            if await backends(pg_url, app) == 0:
                break
            await asyncio.sleep(0.02)
        assert await backends(pg_url, app) == 0

    asyncio.run(go())


def test_a_cancelled_waiter_loses_no_connection(pg_url: str) -> None:
    """Waiters cancelled while they wait (a request's timeout), one of them just as a
    connection was handed to it: the pool still has its one connection to lend."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-cancel"), 1)
        await pool.open()
        lease = pool.acquire()
        await lease.__aenter__()
        waiters = [asyncio.create_task(pool.acquire().__aenter__()) for _ in range(5)]
        await asyncio.sleep(0.01)  # all five wait
        await lease.__aexit__(None, None, None)  # handed to the first waiter...
        waiters[0].cancel()  # ...which is cancelled before it runs
        for w in waiters[1:]:
            w.cancel()
        for w in waiters:
            with pytest.raises(asyncio.CancelledError):
                await w
        async with asyncio.timeout(5):
            async with pool.acquire() as con:
                assert await con.fetchval("SELECT 7") == 7
        assert pool.size == 1 and pool.idle == 1
        await pool.close()

    asyncio.run(go())


def test_a_connection_the_server_closed_is_replaced(pg_url: str) -> None:
    """A backend terminated while idle (a restart, an operator's pg_terminate_backend) is
    dropped at the next lend, and a new one made in its place."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-killed"), 1)
        await pool.open()
        async with pool.acquire() as con:
            pid = await con.fetchval("SELECT pg_backend_pid()")
        killer = await asyncpg.connect(pg_url)
        await killer.execute("SELECT pg_terminate_backend($1)", pid)
        await killer.close()
        idle = pool._free[0]
        for _ in range(250):  # until the goodbye reaches the idle connection
            if idle.is_closed():
                break
            await asyncio.sleep(0.02)
        assert idle.is_closed()
        async with pool.acquire() as con:
            assert await con.fetchval("SELECT pg_backend_pid()") != pid
        assert pool.size == 1
        await pool.close()

    asyncio.run(go())


def test_a_transaction_left_open_is_rolled_back_before_the_next_borrower(pg_url: str) -> None:
    """A borrower that leaves a transaction open (an error while rolling back): the next
    borrower of the same connection starts outside any transaction and sees nothing of
    the abandoned one's work."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-tx"), 1)
        await pool.open()
        async with pool.acquire() as con:
            await con.execute("CREATE TABLE pool_probe (x int)")
        async with pool.acquire() as con:
            await con.execute("BEGIN")
            await con.execute("INSERT INTO pool_probe VALUES (1)")
        async with asyncio.timeout(5), pool.acquire() as con:
            assert not con.is_in_transaction()
            assert await con.fetchval("SELECT count(*) FROM pool_probe") == 0
        assert pool.size == 1
        await pool.close()

    asyncio.run(go())


def test_a_statement_cut_off_by_a_timeout_costs_only_its_connection(pg_url: str) -> None:
    """A statement cancelled mid-flight by the borrower's timeout: every connection lent
    after it (the one still cancelling included) runs statements, and the pool's size
    holds."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-timeout"), 2)
        await pool.open(min_size=2)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2), pool.acquire() as con:
                await con.execute("SELECT pg_sleep(30)")
        for _ in range(4):  # every connection lent in turn works
            async with asyncio.timeout(5), pool.acquire() as con:
                assert await con.fetchval("SELECT 1") == 1
        assert pool.size <= 2
        await pool.close()

    asyncio.run(go())


def test_after_close_borrowers_are_told_the_registry_is_unavailable(pg_url: str) -> None:
    """close() wakes a borrower that was waiting, and refuses later ones, with an error
    the doors answer as "unavailable" (REST 503, Handle RC 2)."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-close"), 1)
        await pool.open()
        lease = pool.acquire()
        await lease.__aenter__()
        waiting = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)
        await pool.close()
        with pytest.raises(PoolClosed) as raised:
            await waiting
        assert unavailable(raised.value)
        await lease.__aexit__(None, None, None)  # the lent one is closed as it returns
        assert pool.size == 0
        with pytest.raises(PoolClosed):
            async with pool.acquire():
                pass

    asyncio.run(go())


def test_a_failed_connect_frees_its_place(pg_url: str) -> None:
    """Connecting fails (the server is down): the error reaches the borrower, and the
    place it would have taken is free again for the next attempt."""
    attempts = 0

    async def flaky() -> asyncpg.Connection:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise ConnectionRefusedError("the server is down")
        return await asyncpg.connect(pg_url)

    async def go() -> None:
        pool = ConnectionPool(flaky, 1)
        gate = asyncio.Event()
        real_connect = pool._connect

        async def slow_then_flaky() -> asyncpg.Connection:
            await gate.wait()  # a second borrower queues while the first connects
            return await real_connect()

        pool._connect = slow_then_flaky
        first = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)
        second = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)
        assert pool.size == 1 and len(pool._waiters) == 1  # the only place is taken
        gate.set()
        with pytest.raises(ConnectionRefusedError):
            await first
        # the failed place went to the waiting borrower, which connects in it
        async with asyncio.timeout(5):
            con = await second
        assert await con.fetchval("SELECT 1") == 1 and pool.size == 1
        pool._put_back(con, False)
        assert pool.idle == 1
        await pool.close()

    asyncio.run(go())


def test_a_transaction_cancelled_during_its_begin_takes_no_later_write_with_it(
    pg_url: str,
) -> None:
    """A request cancelled while its BEGIN is on the wire (a client hung up): asyncpg
    says "not in a transaction" until the server answers, but the server opens one. The
    next borrower of that connection must not write inside it: its write stays, and a
    transaction after it commits. (Cancelled after 0 to 4 loop turns, to land anywhere
    in the BEGIN's round trip.)"""
    from collections.abc import AsyncIterator
    from contextlib import asynccontextmanager, suppress

    @asynccontextmanager
    async def transaction(pool: ConnectionPool) -> AsyncIterator[asyncpg.Connection]:
        async with pool.acquire() as c:  # as PostgresStore.transaction
            tx = c.transaction()
            await tx.start()
            try:
                yield c
            except BaseException:
                with suppress(Exception):
                    await tx.rollback()
                raise
            await tx.commit()

    async def go(turns: int) -> None:
        complaints: list[str] = []  # asyncio errors (asyncpg's reset() logged one each)
        asyncio.get_running_loop().set_exception_handler(
            lambda _loop, ctx: complaints.append(str(ctx.get("message")))
        )
        other = await asyncpg.connect(pg_url)
        await other.execute("DROP TABLE IF EXISTS cut_begin; CREATE TABLE cut_begin (x int)")
        pool = ConnectionPool(connector(pg_url, "idnode-pool-begin"), 1)
        await pool.open()

        async def victim() -> None:
            async with transaction(pool) as c:
                await c.execute("INSERT INTO cut_begin VALUES (0)")

        task = asyncio.create_task(victim())
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task
        async with asyncio.timeout(10):
            async with pool.acquire() as c:  # a write that commits on its own
                await c.execute("INSERT INTO cut_begin VALUES (1)")
            async with transaction(pool) as c:
                await c.execute("INSERT INTO cut_begin VALUES (2)")
            async with pool.acquire() as c:  # every connection lent back, settled
                assert not c.is_in_transaction()
        rows = await other.fetch("SELECT x FROM cut_begin ORDER BY x")
        assert [r[0] for r in rows if r[0] != 0] == [1, 2]
        assert complaints == []
        await pool.close()
        await other.close()

    for turns in range(5):
        asyncio.run(go(turns))


def test_close_ends_connections_being_reset_and_lends_none_made_meanwhile(pg_url: str) -> None:
    """close() right after a block raised (its connection queued for a rollback): that
    connection is terminated and counted out, not leaked; a connection being made as
    close() runs is closed, and its borrower told the pool is closed."""

    async def go() -> None:
        pool = ConnectionPool(connector(pg_url, "idnode-pool-close2"), 2)
        await pool.open()
        lease = pool.acquire()
        con = await lease.__aenter__()
        gate = asyncio.Event()
        made: list[asyncpg.Connection] = []

        async def slow() -> asyncpg.Connection:
            await gate.wait()
            made.append(await asyncpg.connect(pg_url))
            return made[-1]

        pool._connect = slow
        connecting = asyncio.create_task(pool.acquire().__aenter__())
        await asyncio.sleep(0.01)  # the second place is being connected
        await lease.__aexit__(RuntimeError, RuntimeError("a request failed"), None)
        await pool.close()  # before the rollback of the first connection even starts
        assert con.is_closed()
        gate.set()
        with pytest.raises(PoolClosed):
            await connecting
        assert made and made[0].is_closed()
        assert pool.size == 0

    asyncio.run(go())
