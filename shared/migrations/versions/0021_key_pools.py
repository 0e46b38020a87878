"""job.key_env, cost_entry.key_env: the variable whose key made a paid call (key pools, issue
#29, design §14): its name, never the key

Revision ID: 0021
Revises: 0020
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0021'
down_revision: Union[str, Sequence[str], None] = '0020'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_env', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('key_env', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.drop_column('key_env')
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('key_env')
