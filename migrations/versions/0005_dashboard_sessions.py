"""dashboard sessions: server-side, expiring sign-ins (the cookie is a random id, never a token)

Revision ID: 0005
Revises: 0004

Only the sha256 of each session id is stored, with its user, the token it was opened with,
creation, absolute expiry, last activity (idle timeout) and a revoked flag (sign-out).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

BigInt = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.create_table(
        'dashboard_sessions',
        sa.Column('id', BigInt, autoincrement=True, nullable=False),
        sa.Column('session_hash', sa.String(length=64), nullable=False),
        sa.Column('user_id', BigInt, nullable=False),
        sa.Column('token_id', BigInt, nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('expires_at', sa.Float(), nullable=False),
        sa.Column('last_seen_at', sa.Float(), nullable=False),
        sa.Column('revoked', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], ondelete='CASCADE',
                                name=op.f('fk_dashboard_sessions_user_id_users')),
        sa.ForeignKeyConstraint(['token_id'], ['api_tokens.id'], ondelete='CASCADE',
                                name=op.f('fk_dashboard_sessions_token_id_api_tokens')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dashboard_sessions')),
        sa.UniqueConstraint('session_hash', name=op.f('uq_dashboard_sessions_session_hash')),
    )
    op.create_index(op.f('ix_dashboard_sessions_expires_at'), 'dashboard_sessions', ['expires_at'],
                    unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_dashboard_sessions_expires_at'), table_name='dashboard_sessions')
    op.drop_table('dashboard_sessions')
