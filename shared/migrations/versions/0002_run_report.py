"""run_report: a run's built report (json, markdown, html) in SQL

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 10:40:00

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel  # noqa: F401


revision: str = '0002'
down_revision: Union[str, Sequence[str], None] = '0001'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table('run_report',
    sa.Column('run_id', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('built_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('partial', sa.Boolean(), nullable=False),
    sa.Column('overall', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('data_json', sa.Text(), nullable=False),
    sa.Column('markdown', sa.Text(), nullable=False),
    sa.Column('html', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['run.id'], ),
    sa.PrimaryKeyConstraint('run_id')
    )


def downgrade() -> None:
    op.drop_table('run_report')
