"""admin controls: per-model and GPU-memory quotas, run-time scheduler settings, accelerator health

Revision ID: 0006
Revises: 0005

- queues: per GPU model guarantees ({model: milli}), a GPU-memory guarantee and limit (MiB).
- scheduler_settings: one row (id 1) with the policy and plugin weights an admin set at run time.
- accelerators: why and since when an accelerator is unhealthy (cordoned until an admin clears it).
- nodes: whether its cordon came from unhealthy accelerators (lifted when they are healthy again).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # plain ADD COLUMN (a SQLite batch rebuild of a referenced table would trip the foreign keys)
    op.add_column('queues', sa.Column('model_guarantees', sa.JSON(), nullable=True))
    op.add_column('queues', sa.Column('memory_guarantee_mib', BigInt, nullable=True))
    op.add_column('queues', sa.Column('memory_limit_mib', BigInt, nullable=True))
    op.add_column('accelerators', sa.Column('unhealthy_reason', sa.Text(), nullable=True))
    op.add_column('accelerators', sa.Column('unhealthy_since', sa.Float(), nullable=True))
    op.add_column('nodes', sa.Column('health_cordoned', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))
    op.create_table(
        'scheduler_settings',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('policy', sa.String(length=64), nullable=False),
        sa.Column('weights', sa.JSON(), nullable=True),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.Column('updated_by', sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_scheduler_settings')),
    )


def downgrade() -> None:
    op.drop_table('scheduler_settings')
    for table, column in (("queues", "model_guarantees"), ("queues", "memory_guarantee_mib"),
                          ("queues", "memory_limit_mib"), ("accelerators", "unhealthy_reason"),
                          ("accelerators", "unhealthy_since"), ("nodes", "health_cordoned")):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
