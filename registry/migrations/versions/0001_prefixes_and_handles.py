"""prefixes and handles

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prefixes",
        sa.Column("prefix", sa.String(64), primary_key=True),
        sa.Column("display", sa.String(64), nullable=False),
        sa.Column("owner", sa.Text, nullable=False, server_default=""),
        sa.Column("status", sa.String(16), nullable=False, server_default="homed"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "handles",
        sa.Column("handle", sa.Text, primary_key=True),
        sa.Column("display", sa.Text, nullable=False),
        sa.Column("prefix", sa.String(64), nullable=False),
        sa.Column("vals", sa.LargeBinary, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, server_default="1"),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_index("handles_prefix_handle", "handles", ["prefix", "handle"])


def downgrade() -> None:
    op.drop_index("handles_prefix_handle", table_name="handles")
    op.drop_table("handles")
    op.drop_table("prefixes")
