"""deployment (this database's id, which namespaces our batches at their providers) and
provider_batch.result_reads (reads of a results file with unreadable lines, bounded)

Revision ID: 0013
Revises: 0011
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0013'
down_revision: Union[str, Sequence[str], None] = '0011'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        'deployment',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('deployment_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('provider_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('result_reads', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('provider_batch', schema=None) as batch_op:
        batch_op.drop_column('result_reads')
    op.drop_table('deployment')
