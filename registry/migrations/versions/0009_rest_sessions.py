"""REST sessions (/api/sessions) shared by every worker

A REST session is the reference server's HTTP session: a random id, a nonce the client
signs with its key to authenticate, and the identity it proved. Rows are keyed by the
SHA-256 of the session id, so the table never holds an id anyone could present. They
live apart from the Handle protocol's ``sessions`` table: the ids, lifetimes and
replay rules differ.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rest_sessions",
        sa.Column("id_sha256", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.LargeBinary, nullable=False),
        sa.Column("identity_handle", sa.Text, nullable=True),
        sa.Column("identity_index", sa.Integer, nullable=True),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_index("ix_rest_sessions_expires", "rest_sessions", ["expires"])


def downgrade() -> None:
    op.drop_index("ix_rest_sessions_expires", "rest_sessions")
    op.drop_table("rest_sessions")
