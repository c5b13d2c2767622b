"""An applicant's own prefix applications, for the console's "apply for a prefix" page:
the operator's list (prefix_applications.py) shows everyone's to server administrators
only; an administrator who applied while signed in sees the ones it made (matched by the
``applicant`` the application recorded, its INDEX:HANDLE)."""

from __future__ import annotations

from .auth import Identity
from .postgres_store import PostgresStore
from .sqlite_store import SqliteStore
from .store import APPLICATION_COLUMNS, ApplicationRow, Store, StoreError, application_row

MAX_SHOWN = 50  # the newest applications shown; older ones are the operator's history


class OwnApplications:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def of(self, who: Identity) -> list[ApplicationRow]:
        """The newest MAX_SHOWN applications ``who`` made, newest first."""
        sql = (
            f"SELECT {APPLICATION_COLUMNS} FROM prefix_applications WHERE applicant = {{}}"
            f" ORDER BY id DESC LIMIT {MAX_SHOWN}"
        )
        store = self.store
        if isinstance(store, PostgresStore):
            async with store.pool.acquire() as c:
                rows = await c.fetch(sql.format("$1"), str(who))
        elif isinstance(store, SqliteStore):
            rows = store.db.execute(sql.format("?"), (str(who),)).fetchall()
        else:
            raise StoreError(f"no prefix applications on {type(store).__name__}")
        return [application_row(r) for r in rows]
