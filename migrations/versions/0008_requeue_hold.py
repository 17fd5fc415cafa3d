"""requeue hold and run-time limits

Revision ID: 0008
Revises: 0007

jobs.not_before: the scheduler leaves a pending job alone until then (the lost node's agent
fences its copy with a grace period; the new copy must not start before that copy is gone).
jobs.max_runtime_s: the job is stopped past it; the scheduler knows when it ends (backfill).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('not_before', sa.Float(), nullable=True))
    op.add_column('jobs', sa.Column('max_runtime_s', sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN not_before")
    op.execute("ALTER TABLE jobs DROP COLUMN max_runtime_s")
