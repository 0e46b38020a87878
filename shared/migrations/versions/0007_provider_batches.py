"""provider_batch table and job.provider_batch_id (backend mode "batch", design §11)

Revision ID: 0007
Revises: 0006
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0007'
down_revision: Union[str, Sequence[str], None] = '0006'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'provider_batch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('provider', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('backend', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('model', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('state', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column('provider_batch_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
        sa.Column('provider_status', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
        sa.Column('job_count', sa.Integer(), nullable=False),
        sa.Column('succeeded', sa.Integer(), nullable=False),
        sa.Column('errored', sa.Integer(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('due_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('submitted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('last_polled_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('polls', sa.Integer(), nullable=False),
        sa.Column('poll_token', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
        sa.Column('reserved_usd', sa.Float(), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('cancel_requested', sa.Boolean(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('provider_batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_provider_batch_state'), ['state'], unique=False)
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('provider_batch_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_provider_batch_id'), ['provider_batch_id'], unique=False)
        batch_op.create_foreign_key('fk_job_provider_batch_id', 'provider_batch', ['provider_batch_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('fk_job_provider_batch_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_job_provider_batch_id'))
        batch_op.drop_column('provider_batch_id')
    with op.batch_alter_table('provider_batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_provider_batch_state'))
    op.drop_table('provider_batch')
