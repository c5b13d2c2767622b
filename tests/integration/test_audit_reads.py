"""Reading a handle's audit history (registry/audit_history.py) on SQLite and PostgreSQL:
its administrators read it; anyone else is refused, and a refusal writes no audit row
(any administrator could otherwise grow the audit log without limit by asking again)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from idnode.registry.auth import Identity
from idnode.registry.names import PrefixAuthority
from idnode.registry.sealing import Sealer
from idnode.registry.service import RegistryService
from idnode.registry.store import open_store
from idnode.resolver.codec import HandleValue, ResponseCode

ROOT = Identity("0.NA/88.166", 300)
STRANGER = Identity("0.NA/77.1", 300)


def test_a_refused_read_of_history_writes_no_audit_row(store_url: str, tmp_path: Path) -> None:
    async def go() -> None:
        store = open_store(store_url)
        await store.open()
        await store.home_prefix("88.166")
        svc = RegistryService(
            store,
            PrefixAuthority(["88.166"]),
            sealer=Sealer.from_file(tmp_path / "node.key", create=True),
            server_admins=[ROOT],
        )
        url = HandleValue(1, "URL", b"https://e.cn/h")
        assert (await svc.create("88.166/H", (url,), ROOT)).ok
        before = await store.audit_for("88.166/H", 1000)
        for _ in range(3):
            refused = await svc.audit_history.of("88.166/H", STRANGER)
            assert refused.code == ResponseCode.INSUFFICIENT_PERMISSIONS and not refused.entries
        after = await svc.audit_history.of("88.166/H", ROOT, limit=1000)
        assert after.ok and len(after.entries) == len(before) >= 1  # the create, no refusals
        await store.close()

    asyncio.run(go())
