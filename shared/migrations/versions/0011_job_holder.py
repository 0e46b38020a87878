"""job.holder: the process incarnation holding a running job's lease (design §12)

Revision ID: 0011
Revises: 0010

`job.worker` keeps the Celery node name for people; the lease is held by one process of that
node (`<node>/<pid>.<token>`, shared.fleet.incarnation), so a same-name restart or another
prefork child is a new holder. Jobs running before this have none: their lease decides.
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '0011'
down_revision: Union[str, Sequence[str], None] = '0010'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_column('holder')
