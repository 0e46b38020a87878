"""cost_entry: a fine-tuning job is ledgered once (unique (operation, source) where operation = 'fine_tuning')

Fine-tuning rows logged before this revision (by hand, `budget log --operation fine_tuning`)
all have source `manual`; those that share a source get their entry id appended to it, so the
index can be built and no spend is lost.

Revision ID: 0006
Revises: 0005
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: Union[str, Sequence[str], None] = '0005'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None

_WHERE = sa.text("operation = 'fine_tuning'")


def upgrade() -> None:
    op.execute(
        "UPDATE cost_entry SET source = source || ':' || CAST(id AS VARCHAR) "
        "WHERE operation = 'fine_tuning' AND source IN ("
        "SELECT source FROM cost_entry WHERE operation = 'fine_tuning' GROUP BY source HAVING COUNT(*) > 1)"
    )
    op.create_index('uq_cost_entry_fine_tuning_job', 'cost_entry', ['operation', 'source'], unique=True,
                    sqlite_where=_WHERE, postgresql_where=_WHERE)


def downgrade() -> None:
    op.drop_index('uq_cost_entry_fine_tuning_job', table_name='cost_entry')
