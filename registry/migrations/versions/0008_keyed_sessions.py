"""keyed sessions (SESSION_SETUP), their replay counters, and the server key pair

A session row is either a pending 402 challenge (no key) or a session opened by
SESSION_SETUP: its key sealed under the node key, the cipher, the identity the client
claimed and, once a challenge proved it, the identity it authenticated as. Every
request in a keyed session carries a MAC; session_replays holds the MACs accepted
(until the request's own expiry), so a captured request cannot be replayed.
server_keys holds the node's key pair, sealed like HS_SECKEY values.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("mode", sa.Integer, nullable=False, server_default="0"),
        sa.Column("cipher", sa.Integer, nullable=False, server_default="0"),
        sa.Column("key_sealed", sa.LargeBinary, nullable=True),
        sa.Column("claimed_handle", sa.Text, nullable=True),
        sa.Column("claimed_index", sa.Integer, nullable=True),
        sa.Column("major", sa.Integer, nullable=False, server_default="0"),
        sa.Column("minor", sa.Integer, nullable=False, server_default="0"),
        sa.Column("idle_timeout", sa.Float, nullable=False, server_default="0"),
        sa.Column("server_counter", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("client", sa.Text, nullable=False, server_default=""),
    ]


def upgrade() -> None:
    # Sessions are short-lived; rows from before this revision were bearer sessions
    # (a session id alone authorised its holder). Drop them rather than honour them.
    op.execute("DELETE FROM sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in _columns():
            batch.add_column(column)
    op.create_index("ix_sessions_expires", "sessions", ["expires"])
    op.create_index("ix_sessions_client", "sessions", ["client"])
    op.create_table(
        "session_replays",
        sa.Column("session_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("mac", sa.LargeBinary, primary_key=True),
        sa.Column("expires", sa.Float, nullable=False),
    )
    op.create_index("ix_session_replays_expires", "session_replays", ["expires"])
    op.create_table(
        "server_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("algorithm", sa.String(8), nullable=False),
        sa.Column("private_sealed", sa.LargeBinary, nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_index("ix_session_replays_expires", "session_replays")
    op.drop_table("session_replays")
    op.drop_index("ix_sessions_client", "sessions")
    op.drop_index("ix_sessions_expires", "sessions")
    with op.batch_alter_table("sessions") as batch:
        for column in _columns():
            batch.drop_column(column.name)
