"""job.simulated: whether the genesis simulator gave the answer (its response header), per job

Revision ID: 0008
Revises: 0007

Earlier answers take their run's flag (which their submit learnt by asking the endpoints).
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0008'
down_revision: Union[str, Sequence[str], None] = '0007'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('simulated', sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE job SET simulated = (SELECT run.simulated FROM run WHERE run.id = job.run_id) "
        "WHERE output IS NOT NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('simulated')
