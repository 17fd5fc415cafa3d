"""usage history samples (dashboard charts without Prometheus)

Revision ID: 0001a
Revises: 0001

One row per minute per cluster / accelerator model / queue; see controlplane/history.py.
"""
from alembic import op
import sqlalchemy as sa


revision = '0001a'
down_revision = '0001'
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'usage_samples',
        sa.Column('id', BigInt, autoincrement=True, nullable=False),
        sa.Column('ts', sa.Float(), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('key', sa.String(length=160), nullable=False),
        sa.Column('capacity_milli', BigInt, nullable=False),
        sa.Column('allocated_milli', BigInt, nullable=False),
        sa.Column('used_milli', BigInt, nullable=True),
        sa.Column('pending_jobs', sa.Integer(), nullable=False),
        sa.Column('running_jobs', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_usage_samples')),
        sa.UniqueConstraint('scope', 'key', 'ts', name='uq_usage_samples_bucket'),
    )
    op.create_index('ix_usage_samples_scope_ts', 'usage_samples', ['scope', 'ts'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_usage_samples_scope_ts', table_name='usage_samples')
    op.drop_table('usage_samples')
