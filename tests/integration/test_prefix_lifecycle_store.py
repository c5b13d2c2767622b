"""The prefix lifecycle's store methods (migration 0011) on both backends: one open
application per prefix, one decision per application, the upward queue claimed once,
suspensions."""

from __future__ import annotations

import asyncio
import time

from idnode.registry.store import open_store


def test_applications_decisions_and_the_upward_queue(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            a = await s.add_prefix_application(
                "88.166.1001", "hosted", "secret", b"sealed", None, '{"name": "A"}', "anon"
            )
            assert a is not None
            # a second application for the prefix (any case) waits for the first's fate
            again = await s.add_prefix_application(
                "88.166.1001", "hosted", "secret", b"x", None, "{}", "anon"
            )
            assert again is None
            b = await s.add_prefix_application(
                "88.166.1002", "delegated", "pubkey", b"\x00key", b"\x00\x01site", "{}", "anon"
            )
            assert b is not None and b != a
            full = await s.add_prefix_application(
                "88.166.1003", "hosted", "secret", b"x", None, "{}", "anon", max_pending=2
            )
            assert full is None  # two wait already
            row = await s.prefix_application(b)
            assert row is not None
            assert (row.prefix, row.mode, row.status, row.admin_key, row.site) == (
                "88.166.1002",
                "delegated",
                "pending",
                b"\x00key",
                b"\x00\x01site",
            )
            assert [r.id for r in await s.prefix_applications("pending")] == [b, a]  # newest first
            assert await s.decide_prefix_application(a, "approved", "300:0.NA/88.166", "", "queued")
            assert not await s.decide_prefix_application(a, "rejected", "someone", "late")
            assert await s.decide_prefix_application(b, "rejected", "300:0.NA/88.166", "no")
            # a rejected prefix may apply again; an approved one may not
            assert (
                await s.add_prefix_application("88.166.1002", "hosted", "secret", b"", None, "", "")
                is not None
            )
            assert (
                await s.add_prefix_application("88.166.1001", "hosted", "secret", b"", None, "", "")
                is None
            )
            got = await s.prefix_application(a)
            assert got is not None
            assert (got.status, got.decided_by, got.upward) == (
                "approved",
                "300:0.NA/88.166",
                "queued",
            )
            assert [r.id for r in await s.prefix_applications("rejected")] == [b]
            assert len(await s.prefix_applications()) == 3
            # the queue: claimed once while leased, again once the lease ran out
            t = time.time()
            assert [r.id for r in await s.claim_prefix_upward(t, 60.0)] == [a]
            assert await s.claim_prefix_upward(t + 1, 60.0) == []
            assert [r.id for r in await s.claim_prefix_upward(t + 61, 60.0)] == [a]
            await s.set_prefix_upward(a, "queued", "top down", 1, t + 5)
            assert await s.claim_prefix_upward(t + 4, 60.0) == []
            (due,) = await s.claim_prefix_upward(t + 6, 60.0)
            assert (due.upward_error, due.upward_attempts) == ("top down", 1)
            await s.set_prefix_upward(a, "registered", "", 2, 0.0)
            assert await s.claim_prefix_upward(t + 1000, 60.0) == []
            assert await s.prefix_application(9999) is None
        finally:
            await s.close()

    asyncio.run(go())


def test_suspensions(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            assert await s.suspended_prefixes() == []
            assert await s.suspend_prefix("88.166.1001", "unpaid", "300:0.NA/88.166")
            assert not await s.suspend_prefix("88.166.1001", "again", "300:0.NA/88.166")
            assert await s.suspended_prefixes() == [("88.166.1001", "unpaid")]
            assert await s.resume_prefix("88.166.1001")
            assert not await s.resume_prefix("88.166.1001")
            assert await s.suspended_prefixes() == []
        finally:
            await s.close()

    asyncio.run(go())
