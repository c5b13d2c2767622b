"""Invalidations of concurrent writes go together (resolver/invalidation_batches.py).

The coalescing itself, with a flush that records what it was given: the promise to a
writer (carried by a flush that started after its call), batching under load, the bound
on a batch, and that neither a failing flush nor a cancelled caller leaves anyone
waiting or any key untold. Redis and the registry behind a real flush are tested in
tests/integration/test_core.py.
"""

from __future__ import annotations

import asyncio

from idnode.resolver.invalidation_batches import InvalidationBatches


class Recorder:
    """A flush that takes a while (until released), recording each batch it was given."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.started = 0  # flushes under way or done
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail = fail

    async def __call__(self, keys: list[str]) -> None:
        self.started += 1
        await self.gate.wait()
        self.batches.append(keys)
        if self.fail:
            raise RuntimeError("Redis went away")


async def settle() -> None:
    """Let the tasks just created run up to their first wait."""
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_lone_write_goes_at_once_and_concurrent_ones_go_together() -> None:
    async def go() -> None:
        rec = Recorder()
        b = InvalidationBatches(rec)
        await b.submit(["a"])
        assert rec.batches == [["a"]]
        rec.gate.clear()  # the next flush is slow: writes pile up behind it
        first = asyncio.create_task(b.submit(["b"]))
        await settle()
        rest = [asyncio.create_task(b.submit([f"k{i}", "shared"])) for i in range(20)]
        await settle()
        rec.gate.set()
        await asyncio.gather(first, *rest)
        assert rec.batches[1] == ["b"]
        assert len(rec.batches) == 3  # the twenty writes went as one invalidation
        assert sorted(rec.batches[2]) == sorted([f"k{i}" for i in range(20)] + ["shared"])
        assert b.batches == 3 and b.writes == 22

    asyncio.run(go())


def test_a_write_returns_only_after_a_flush_that_started_after_it() -> None:
    async def go() -> None:
        rec = Recorder()
        b = InvalidationBatches(rec)
        rec.gate.clear()
        early = asyncio.create_task(b.submit(["early"]))
        await settle()
        assert rec.started == 1  # under way, without "late"
        late = asyncio.create_task(b.submit(["late"]))
        await settle()
        rec.gate.set()
        await early
        await late
        assert rec.batches == [["early"], ["late"]]

    asyncio.run(go())


def test_a_batch_is_bounded_in_keys() -> None:
    async def go() -> None:
        rec = Recorder()
        b = InvalidationBatches(rec, max_keys=10)
        rec.gate.clear()
        calls = [asyncio.create_task(b.submit([f"{i}-{j}" for j in range(4)])) for i in range(6)]
        await settle()
        rec.gate.set()
        await asyncio.gather(*calls)
        assert all(len(keys) <= 10 for keys in rec.batches)
        assert sorted(k for keys in rec.batches for k in keys) == sorted(
            f"{i}-{j}" for i in range(6) for j in range(4)
        )
        # one oversized write still goes (alone)
        await b.submit([str(i) for i in range(25)])
        assert len(rec.batches[-1]) == 25

    asyncio.run(go())


def test_a_failing_flush_releases_its_writers_and_the_next_batch_still_goes() -> None:
    async def go() -> None:
        rec = Recorder(fail=True)
        b = InvalidationBatches(rec)
        await asyncio.gather(*(b.submit([str(i)]) for i in range(5)))  # returns, no raise
        rec.fail = False
        await b.submit(["after"])
        assert rec.batches[-1] == ["after"]

    asyncio.run(go())


def test_a_cancelled_writer_does_not_cancel_the_invalidation() -> None:
    async def go() -> None:
        rec = Recorder()
        b = InvalidationBatches(rec)
        rec.gate.clear()
        caller = asyncio.create_task(b.submit(["committed"]))
        await settle()
        caller.cancel()  # the client hung up while its write was being told
        await settle()
        rec.gate.set()
        await b.drain()
        assert rec.batches == [["committed"]]

    asyncio.run(go())
