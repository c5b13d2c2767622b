"""audit log

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("op", sa.String(32), nullable=False),
        sa.Column("handle", sa.Text, nullable=False),
        sa.Column("rc", sa.Integer, nullable=False),
        sa.Column("before_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("after_sha256", sa.String(64), nullable=False, server_default=""),
        sa.Column("detail", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("audit_log_handle", "audit_log", ["handle", "id"])


def downgrade() -> None:
    op.drop_index("audit_log_handle", table_name="audit_log")
    op.drop_table("audit_log")
