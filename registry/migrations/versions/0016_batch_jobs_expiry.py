"""batch_jobs.expires_at indexed: expired uploads are deleted without reading every job

Jobs are deleted once expired (registry/batch_jobs.py ``_prune``: when a job starts and,
at most once a minute a worker, when jobs are read); without an index each delete read
the whole table. A small table (at most 50 jobs an administrator, kept an hour), so the
index is built under its lock.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26
"""

from __future__ import annotations

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_batch_jobs_expires_at", "batch_jobs", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_batch_jobs_expires_at", "batch_jobs")
