"""requeue hold: a job requeued because its node was lost waits until the old copy has stopped

Revision ID: 0008
Revises: 0005

jobs.not_before: the scheduler leaves a pending job alone until then (the lost node's agent
fences its copy with a grace period; the new copy must not start before that copy is gone).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('not_before', sa.Float(), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE jobs DROP COLUMN not_before")
