"""limits and identity: idempotency body hash, queue policies, token expiry and node bootstrap rules

Revision ID: 0004
Revises: 0003

- jobs.idempotency_hash: sha256 of the submitted body, so a key reused with another body is refused.
- queues: the highest priority, whether non-preemptible jobs are allowed, the longest
  min_runtime_s members may ask for, and a cap on pending jobs (NULL: no cap).
- api_tokens: an expiry for every token; bootstrap tokens may be single use and restricted to
  node names matching a pattern (used_at records the first use).
- users: disabled users cannot authenticate.
- jobs: an index to count a queue's pending jobs (the per-queue cap).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN (a SQLite batch rebuild of a referenced table would trip the foreign keys)
    op.add_column('jobs', sa.Column('idempotency_hash', sa.String(64), nullable=True))
    op.add_column('queues', sa.Column('max_priority', sa.Integer(), nullable=True))
    op.add_column('queues', sa.Column('allow_non_preemptible', sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
    op.add_column('queues', sa.Column('max_min_runtime_s', sa.Float(), nullable=True))
    op.add_column('queues', sa.Column('max_pending_jobs', sa.Integer(), nullable=True))
    op.add_column('api_tokens', sa.Column('expires_at', sa.Float(), nullable=True))
    op.add_column('api_tokens', sa.Column('single_use', sa.Boolean(), nullable=False,
                                          server_default=sa.false()))
    op.add_column('api_tokens', sa.Column('name_pattern', sa.String(253), nullable=True))
    op.add_column('api_tokens', sa.Column('used_at', sa.Float(), nullable=True))
    op.add_column('users', sa.Column('disabled', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index('ix_jobs_queue_status', 'jobs', ['queue_id', 'status'])  # pending count per queue


def downgrade() -> None:
    op.drop_index('ix_jobs_queue_status', 'jobs')
    for table, column in (("jobs", "idempotency_hash"), ("queues", "max_priority"),
                          ("queues", "allow_non_preemptible"), ("queues", "max_min_runtime_s"),
                          ("queues", "max_pending_jobs"), ("api_tokens", "expires_at"),
                          ("api_tokens", "single_use"), ("api_tokens", "name_pattern"),
                          ("api_tokens", "used_at"), ("users", "disabled")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
