"""reuse columns on job; cost_entry unique on (job_id, operation) so a job's judge call has its own entry

Revision ID: 0003
Revises: 0002
"""
from typing import Sequence, Union

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

# 0001 created `UNIQUE (job_id)` without a name: PostgreSQL calls it cost_entry_job_id_key; on
# SQLite, batch mode rebuilds the table and this naming convention names the reflected one.
_SQLITE_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _old_unique_name() -> str:
    return "uq_cost_entry_job_id" if op.get_bind().dialect.name == "sqlite" else "cost_entry_job_id_key"


def upgrade() -> None:
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.add_column(sa.Column('request_key', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('reused_from_job_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('reused_from_run_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True))
        batch_op.create_index(batch_op.f('ix_job_request_key'), ['request_key'], unique=False)
    with op.batch_alter_table('cost_entry', schema=None, naming_convention=_SQLITE_NAMING) as batch_op:
        batch_op.drop_constraint(_old_unique_name(), type_='unique')
        batch_op.create_unique_constraint('uq_cost_entry_job_operation', ['job_id', 'operation'])


def downgrade() -> None:
    with op.batch_alter_table('cost_entry', schema=None, naming_convention=_SQLITE_NAMING) as batch_op:
        batch_op.drop_constraint('uq_cost_entry_job_operation', type_='unique')
        batch_op.create_unique_constraint(_old_unique_name(), ['job_id'])
    with op.batch_alter_table('job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_job_request_key'))
        batch_op.drop_column('reused_from_run_id')
        batch_op.drop_column('reused_from_job_id')
        batch_op.drop_column('request_key')
