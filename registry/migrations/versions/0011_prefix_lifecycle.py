"""prefix lifecycle: enterprise applications for a prefix, and suspended prefixes

An enterprise applies for a prefix under one this node homes (the SNMS workflow): its
administrator's key (a secret sealed under the node key, or HS_PUBKEY data), contact
details, and either "hosted here" or its own node's HS_SITE (a delegation). An operator
approves or rejects it; an approved prefix may be registered upward at the top-level
node, queued and retried until it is (``upward``: "", queued, registered).

A suspended prefix answers every door with RC 605 and refuses writes under it; the rows
are read by every worker (registry/prefix_applications.py).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prefix_applications",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("prefix", sa.String(64), nullable=False),  # normalised
        sa.Column("display", sa.String(64), nullable=False),  # as applied for
        sa.Column("mode", sa.String(16), nullable=False),  # hosted | delegated
        sa.Column("status", sa.String(16), nullable=False),  # pending | approved | rejected
        sa.Column("admin_kind", sa.String(16), nullable=False),  # secret | pubkey
        sa.Column("admin_key", sa.LargeBinary, nullable=False),  # sealed secret, or HS_PUBKEY
        sa.Column("site", sa.LargeBinary, nullable=True),  # HS_SITE data (delegated)
        sa.Column("contact", sa.Text, nullable=False, server_default=""),  # JSON
        sa.Column("applicant", sa.Text, nullable=False, server_default=""),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("decided_by", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("decided_at", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("upward", sa.String(16), nullable=False, server_default=""),
        sa.Column("upward_error", sa.Text, nullable=False, server_default=""),
        sa.Column("upward_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("upward_next_at", sa.Float, nullable=False, server_default="0"),
    )
    op.create_index("ix_prefix_applications_prefix", "prefix_applications", ["prefix"])
    op.create_index("ix_prefix_applications_status", "prefix_applications", ["status"])
    op.create_index("ix_prefix_applications_upward", "prefix_applications", ["upward"])
    op.create_table(
        "prefix_suspensions",
        sa.Column("prefix", sa.String(64), primary_key=True),  # normalised
        sa.Column("display", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("suspended_by", sa.Text, nullable=False, server_default=""),
        sa.Column("at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("prefix_suspensions")
    op.drop_index("ix_prefix_applications_upward", "prefix_applications")
    op.drop_index("ix_prefix_applications_status", "prefix_applications")
    op.drop_index("ix_prefix_applications_prefix", "prefix_applications")
    op.drop_table("prefix_applications")
