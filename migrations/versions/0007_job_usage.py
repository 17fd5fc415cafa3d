"""job usage: each job member's measured use of each slice, per minute (hourly once downsampled)

Revision ID: 0007
Revises: 0006

See controlplane/db/usage.py. Sums and counts per bucket (merge exactly), p95 and max; the
hourly roll-up's watermark.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'job_usage',
        sa.Column('id', BigInt, autoincrement=True, nullable=False),
        sa.Column('slice_id', BigInt, nullable=False),
        sa.Column('job_id', BigInt, nullable=False),
        sa.Column('ts', sa.Float(), nullable=False),
        sa.Column('resolution_s', sa.Integer(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('util_samples', sa.Integer(), nullable=False),
        sa.Column('util_sum', sa.Float(), nullable=False),
        sa.Column('util_p95', sa.Float(), nullable=True),
        sa.Column('memory_sum', sa.Float(), nullable=False),
        sa.Column('memory_max', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['slice_id'], ['slices.id'], ondelete='CASCADE',
                                name=op.f('fk_job_usage_slice_id_slices')),
        sa.ForeignKeyConstraint(['job_id'], ['jobs.id'], ondelete='CASCADE',
                                name=op.f('fk_job_usage_job_id_jobs')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_job_usage')),
        sa.UniqueConstraint('slice_id', 'resolution_s', 'ts', name='uq_job_usage_bucket'),
    )
    op.create_index('ix_job_usage_job_ts', 'job_usage', ['job_id', 'ts'], unique=False)
    op.create_index('ix_job_usage_ts', 'job_usage', ['ts'], unique=False)
    op.create_table(
        'usage_watermarks',
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('ts', sa.Float(), nullable=False),
        sa.Column('slice_id', BigInt, nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_usage_watermarks')),
    )


def downgrade() -> None:
    op.drop_table('usage_watermarks')
    op.drop_index('ix_job_usage_ts', table_name='job_usage')
    op.drop_index('ix_job_usage_job_ts', table_name='job_usage')
    op.drop_table('job_usage')
