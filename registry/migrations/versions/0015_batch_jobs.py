"""batch_jobs: uploads of many identifiers (POST /api/batches) and each line's result

``batch_jobs`` is one row per upload: whose it is (``owner``, the admin's INDEX:HANDLE
with the handle normalised as the registry compares them), its counters and state, a
heartbeat (``updated_at``) that the worker running it moves after every chunk, and when
it may be forgotten (``expires_at``). ``batch_job_lines`` holds one result per line,
written in the same transaction as the counters, so a reader on any worker sees both
move together. A worker that stops mid-job leaves a running row whose heartbeat goes
stale: readers report it interrupted, never finished.

Both are bounded (per admin, kept an hour); on Citus they are distributed by job id,
colocated (README, "Moving to Citus").

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "batch_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("owner", sa.Text, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),  # Unix seconds (orders the list)
        sa.Column("updated_at", sa.Float, nullable=False),  # the runner's heartbeat
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("ok", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("unknown", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", sa.String(16), nullable=False),  # running, done, stopped
        sa.Column("message", sa.Text, nullable=False, server_default=""),
    )
    op.create_index("ix_batch_jobs_owner", "batch_jobs", ["owner", "created_at"])
    op.create_table(
        "batch_job_lines",
        sa.Column("job_id", sa.String(32), primary_key=True),
        sa.Column("line", sa.Integer, primary_key=True),  # the upload's line number
        sa.Column("handle", sa.Text, nullable=False),
        sa.Column("status", sa.String(8), nullable=False),  # ok, failed, unknown
        sa.Column("code", sa.Integer, nullable=False),  # the Handle response code
        sa.Column("message", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("batch_job_lines")
    op.drop_index("ix_batch_jobs_owner", "batch_jobs")
    op.drop_table("batch_jobs")
