"""cost_entry.call_id: the id of the paid call an entry is for (its budget reservation, its journal
entry, its settled member), so a replayed or reconciled payment is recognised as the same one

Revision ID: 0005
Revises: 0004
"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: Union[str, Sequence[str], None] = '0004'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.add_column(sa.Column('call_id', sa.String(length=32), nullable=True))
        batch_op.create_index('ix_cost_entry_call_id', ['call_id'], unique=True)


def downgrade() -> None:
    with op.batch_alter_table('cost_entry', schema=None) as batch_op:
        batch_op.drop_index('ix_cost_entry_call_id')
        batch_op.drop_column('call_id')
