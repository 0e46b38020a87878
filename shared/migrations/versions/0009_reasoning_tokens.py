"""job.reasoning_tokens, job.truncated, cost_entry.reasoning_tokens: reasoning or thinking tokens
(billed inside output_tokens, shown apart) and answers cut off by their output allowance

Revision ID: 0009
Revises: 0008
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: Union[str, Sequence[str], None] = '0008'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reasoning_tokens', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('truncated', sa.Boolean(), nullable=True))
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('reasoning_tokens', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.drop_column('reasoning_tokens')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('truncated')
        batch_op.drop_column('reasoning_tokens')
