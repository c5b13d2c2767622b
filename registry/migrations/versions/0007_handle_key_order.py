"""Handles keyed in byte order; prefix listing through the primary key

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-24

Handle keys are normalised identifiers, compared byte for byte: the "C" collation
makes PostgreSQL compare them with memcmp instead of the database locale's strcoll
(index builds and lookups are faster, and the order no longer depends on the locale).
In byte order, every handle of prefix P lies in the key range ["P/", "P0") of the
primary key, so the separate (prefix, handle) index is dropped: at 1.5 billion
identifiers it costs about 50 bytes each and slows every insert.
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("handles_prefix_handle", table_name="handles")
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE handles ALTER COLUMN handle TYPE text COLLATE "C"')
    # SQLite compares TEXT with memcmp already (the BINARY collation)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute('ALTER TABLE handles ALTER COLUMN handle TYPE text COLLATE "default"')
    op.create_index("handles_prefix_handle", "handles", ["prefix", "handle"])
