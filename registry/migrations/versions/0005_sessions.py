"""authentication sessions shared by every worker

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("identity_handle", sa.Text, nullable=True),
        sa.Column("identity_index", sa.Integer, nullable=True),
        sa.Column("nonce", sa.LargeBinary, nullable=True),
        sa.Column("digest", sa.LargeBinary, nullable=True),
        sa.Column("request", sa.LargeBinary, nullable=True),
        sa.Column("challenge_expires", sa.Float, nullable=False, server_default="0"),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("sessions")
