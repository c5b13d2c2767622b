"""prefix applications: the client address each came from

Anyone may apply for a prefix; ``source`` (the client's address, as the REST door saw
it) bounds how many applications one address has waiting for an operator
(registry/prefix_applications.py MAX_PENDING_PER_SOURCE), so one client cannot fill the
node's pending limit.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("prefix_applications") as t:
        t.add_column(sa.Column("source", sa.String(64), nullable=False, server_default=""))
    op.create_index("ix_prefix_applications_source", "prefix_applications", ["source", "status"])


def downgrade() -> None:
    op.drop_index("ix_prefix_applications_source", "prefix_applications")
    with op.batch_alter_table("prefix_applications") as t:
        t.drop_column("source")
