"""job.epoch: repeated trials (submit --epochs k), one job per (run, agent, task, backend, epoch)

Revision ID: 0010
Revises: 0009

Earlier jobs are epoch 1 (a run of one epoch, as every run was).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: Union[str, Sequence[str], None] = '0009'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('epoch', sa.Integer(), server_default=sa.text('1'), nullable=False))
        batch_op.drop_constraint('uq_job_slot', type_='unique')
        batch_op.create_unique_constraint('uq_job_slot', ['run_id', 'agent', 'task_id', 'backend', 'epoch'])


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_constraint('uq_job_slot', type_='unique')
        batch_op.create_unique_constraint('uq_job_slot', ['run_id', 'agent', 'task_id', 'backend'])
        batch_op.drop_column('epoch')
