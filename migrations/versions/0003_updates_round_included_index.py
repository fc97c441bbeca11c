"""index the updates by (round, included, update_hash, node): a round's included updates in hash order

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 03:40:00.000000

"""
from typing import Sequence, Union

from alembic import op

# revision identifiers, used by Alembic.
revision: str = '0003'
down_revision: Union[str, Sequence[str], None] = '0002'
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.create_index('ix_updates_round_included', ['round', 'included', 'update_hash', 'node'], unique=False)


def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.drop_index('ix_updates_round_included')
