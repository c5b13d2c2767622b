"""search_values: the value index for reverse lookup (``--search-index``)

One row per searchable value of a handle (registry/value_index.py): the handle's key,
the value's TYPE and its data. ``ix_search_values_term`` on (type, data) answers
``/hrls/handles?URL=...`` (exact, or a trailing ``*`` as a range: the "C" collation
makes ``LIKE 'abc%'`` an index range on PostgreSQL); ``ix_search_values_handle`` finds a
handle's rows when it is written (a hash index on PostgreSQL: ~20 bytes an entry
whatever the handle's length). No primary key: it would repeat every row's bytes once
more, and nothing needs one (a handle's rows are replaced as a whole).
``search_index`` holds one row once ``idnode search-index build`` has filled the table:
a node started with ``--search-index`` refuses to serve an index never built.

The table is empty until the index is built; it is not partitioned (it is keyed by
``handle``, so it can be distributed beside ``handles`` on Citus).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    text = sa.Text(collation="C") if pg else sa.Text()
    op.create_table(
        "search_values",
        sa.Column("handle", text, nullable=False),  # the handle's key, as in handles
        sa.Column("type", text, nullable=False),  # upper-cased
        sa.Column("data", text, nullable=False),
    )
    op.create_index("ix_search_values_term", "search_values", ["type", "data"])
    op.create_index("ix_search_values_handle", "search_values", ["handle"], postgresql_using="hash")
    op.create_table(
        "search_index",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("built_at", sa.BigInteger, nullable=False),  # Unix seconds
        sa.Column("handles", sa.BigInteger, nullable=False),  # handles indexed then
    )


def downgrade() -> None:
    op.drop_table("search_index")
    op.drop_index("ix_search_values_handle", "search_values")
    op.drop_index("ix_search_values_term", "search_values")
    op.drop_table("search_values")
