"""statistics: per-prefix counts reported upward, and what a top-level node received

``statistics`` is this node's own count per (prefix, UTC day) of registrations,
resolutions and errors, added to by each worker's flush (one upsert statement per
flush, ``seq`` bumped each time). A row whose ``seq`` is past ``sent_seq`` has a
snapshot the node above has not acknowledged yet: the row is its own outbox entry
(attempts, next_at, error: the retry state; next_at doubles as a lease).

``statistics_received`` is what a top-level node keeps of its children's reports: the
latest cumulative snapshot per (reporting node, prefix, day), replaced only by one with
a higher ``seq``, so a resend is never counted twice.

``statistics_source`` holds this registry's reporting id (one row, made here).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "statistics",
        sa.Column("prefix", sa.String(64), primary_key=True),  # normalised, homed
        sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
        sa.Column("registrations", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("resolutions", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("errors", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("seq", sa.BigInteger, nullable=False, server_default="1"),
        sa.Column("sent_seq", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_at", sa.Float, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=False, server_default=""),
    )
    op.create_table(
        "statistics_received",
        sa.Column("node", sa.String(64), primary_key=True),  # the reporting registry's id
        sa.Column("prefix", sa.String(64), primary_key=True),  # normalised
        sa.Column("day", sa.String(10), primary_key=True),
        sa.Column("display", sa.String(64), nullable=False),  # the prefix as reported
        sa.Column("sender", sa.Text, nullable=False),  # INDEX:HANDLE that reported it
        sa.Column("registrations", sa.BigInteger, nullable=False),
        sa.Column("resolutions", sa.BigInteger, nullable=False),
        sa.Column("errors", sa.BigInteger, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("received_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_statistics_received_prefix", "statistics_received", ["prefix", "day"])
    source = op.create_table(
        "statistics_source",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("node", sa.String(64), nullable=False),
    )
    op.bulk_insert(source, [{"id": 1, "node": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("statistics_source")
    op.drop_index("ix_statistics_received_prefix", "statistics_received")
    op.drop_table("statistics_received")
    op.drop_table("statistics")
