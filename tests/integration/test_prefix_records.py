"""Store.prefix_records on both backends: every 0.NA/ record, one key range, nothing else."""

from __future__ import annotations

import asyncio

from idnode.registry.store import HandleRecord, open_store
from idnode.resolver.codec import HandleValue, encode_values


def test_prefix_records_are_the_prefix_handles_only(store_url: str) -> None:
    async def go() -> None:
        s = open_store(store_url)
        await s.open()
        try:
            v = encode_values([HandleValue(1, "HS_SITE", b"x")])
            names = ["0.NA/88.166", "0.na/88.166.1001", "0.NA/88.2", "0.NAX/1", "0.N/1", "88/x"]
            names += ["0.NA0/1", "0/NA"]
            await s.put_many([HandleRecord(n, v) for n in names])
            got = await s.prefix_records()
            assert [h for h, _ in got] == ["0.NA/88.166", "0.na/88.166.1001", "0.NA/88.2"]
            assert all(vals == v for _, vals in got)
            assert len(await s.prefix_records(limit=1)) == 1
        finally:
            await s.close()

    asyncio.run(go())
