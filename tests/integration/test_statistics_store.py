"""The statistics store methods (migration 0012) on both backends: flushes add to
(prefix, day) rows and bump their seq; the outbox claim takes a row once; an
acknowledgement only raises sent_seq; the top keeps the snapshot with the highest seq
(a resend, or an older report arriving late, changes nothing)."""

from __future__ import annotations

import asyncio

from idnode.registry.store import ReceivedRow, open_store


def test_counts_and_the_outbox(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            node = await s.statistics_node()
            assert len(node) == 32 and node == await s.statistics_node()
            assert await s.statistics_pending() == 0
            await s.add_statistics("2026-11-26", [("88.166", 2, 10, 1), ("88.166.2002", 0, 0, 0)])
            await s.add_statistics("2026-11-26", [("88.166", 1, 5, 0), ("88.166.2002", 1, 0, 0)])
            await s.add_statistics("2026-11-27", [("88.166", 0, 3, 3)])
            await s.add_statistics("2026-11-27", [])
            rows = await s.statistics()
            got = [(r.prefix, r.day, r.registrations, r.resolutions, r.errors, r.seq) for r in rows]
            assert got == [
                ("88.166", "2026-11-26", 3, 15, 1, 2),
                ("88.166.2002", "2026-11-26", 1, 0, 0, 1),  # an all-zero count adds no row
                ("88.166", "2026-11-27", 0, 3, 3, 1),
            ]
            assert [r.day for r in await s.statistics("88.166", since="2026-11-27")] == [
                "2026-11-27"
            ]
            assert await s.statistics_pending() == 3
            claimed = await s.claim_statistics(1000.0, 60.0)
            assert [(r.prefix, r.day, r.seq, r.sent_seq) for r in claimed] == [
                ("88.166", "2026-11-26", 2, 0),
                ("88.166.2002", "2026-11-26", 1, 0),
                ("88.166", "2026-11-27", 1, 0),
            ]
            assert await s.claim_statistics(1001.0, 60.0) == []  # leased to the first
            # acknowledged; meanwhile a flush added to one row (seq 3): still pending
            await s.add_statistics("2026-11-26", [("88.166", 0, 1, 0)])
            await s.statistics_sent([(r.prefix, r.day, r.seq) for r in claimed])
            await s.statistics_sent([("88.166", "2026-11-26", 1)])  # late: never lowers
            assert await s.statistics_pending() == 1
            (again,) = await s.claim_statistics(1002.0, 60.0)
            assert (again.prefix, again.day, again.seq, again.sent_seq, again.resolutions) == (
                "88.166",
                "2026-11-26",
                3,
                2,
                16,
            )
            await s.statistics_failed([("88.166", "2026-11-26")], "top down", 2000.0)
            assert await s.claim_statistics(1999.0, 60.0) == []  # backing off
            (failed,) = await s.statistics("88.166", "2026-11-26", "2026-11-26")
            assert (failed.attempts, failed.next_at, failed.error) == (1, 2000.0, "top down")
            (due,) = await s.claim_statistics(2000.0, 60.0)
            assert due.attempts == 1
            await s.statistics_sent([("88.166", "2026-11-26", 3)])
            assert await s.statistics_pending() == 0
            (done,) = await s.statistics("88.166", "2026-11-26", "2026-11-26")
            assert (done.sent_seq, done.attempts, done.next_at, done.error) == (3, 0, 0.0, "")
        finally:
            await s.close()

    asyncio.run(go())


def test_received_reports_keep_the_highest_seq(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            a = "300:0.NA/88.166"
            first = [
                ReceivedRow("", "88.166", "2026-11-26", "", 3, 15, 1, 2),
                ReceivedRow("", "88.166.2002", "2026-11-26", "", 1, 0, 0, 1),
            ]
            await s.receive_statistics(a, "n1", first)
            await s.receive_statistics(a, "n1", first)  # a resend: nothing changes
            await s.receive_statistics(
                a, "n1", [ReceivedRow("", "88.166", "2026-11-26", "", 9, 9, 9, 1)]
            )
            await s.receive_statistics(
                a, "n2", [ReceivedRow("", "88.166", "2026-11-26", "", 1, 1, 1, 1)]
            )
            rows = await s.received_statistics("88.166")
            assert [
                (r.node, r.prefix, r.sender, r.registrations, r.resolutions, r.seq) for r in rows
            ] == [
                ("n1", "88.166", a, 3, 15, 2),  # the older snapshot (seq 1) did not replace it
                ("n2", "88.166", a, 1, 1, 1),
            ]
            await s.receive_statistics(
                a, "n1", [ReceivedRow("", "88.166", "2026-11-26", "", 4, 20, 1, 3)]
            )
            (n1, _n2) = await s.received_statistics("88.166", "2026-11-26", "2026-11-26")
            assert (n1.registrations, n1.resolutions, n1.seq) == (4, 20, 3)
            assert len(await s.received_statistics()) == 3
            assert await s.received_statistics("88.166", since="2026-11-27") == []
            assert [r.prefix for r in await s.received_statistics("88.166.2002")] == ["88.166.2002"]
        finally:
            await s.close()

    asyncio.run(go())
