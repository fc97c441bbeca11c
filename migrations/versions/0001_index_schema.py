"""index schema: nodes, rounds, updates, model versions, chain events, indexer cursor

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 13:09:41.671679

"""
from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa

# uint64 from the chain: exact NUMERIC(20) where the database has it (see ledger.index.models.UInt64).
UINT64 = sa.Numeric(20, 0).with_variant(sa.BigInteger(), "sqlite")


# revision identifiers, used by Alembic.
revision: str = '0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table('chain_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('block_hash', sa.String(length=64), nullable=False),
    sa.Column('tx_hash', sa.String(length=64), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('event_name', sa.String(length=32), nullable=False),
    sa.Column('args', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_chain_events')),
    sa.UniqueConstraint('tx_hash', 'log_index', name=op.f('uq_chain_events_tx_hash_log_index'))
    )
    with op.batch_alter_table('chain_events', schema=None) as batch_op:
        batch_op.create_index('ix_chain_events_block_number_log_index', ['block_number', 'log_index'], unique=False)

    op.create_table('indexer_cursor',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('chain_id', sa.BigInteger(), nullable=False),
    sa.Column('contract_address', sa.String(length=42), nullable=False),
    sa.Column('start_block', sa.BigInteger(), nullable=False),
    sa.Column('last_block', sa.BigInteger(), nullable=True),
    sa.Column('last_block_hash', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_indexer_cursor'))
    )
    op.create_table('model_versions',
    sa.Column('version', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('model_hash', sa.String(length=64), nullable=False),
    sa.Column('parent_hash', sa.String(length=64), nullable=True),
    sa.Column('round', sa.BigInteger(), nullable=False),
    sa.Column('depth', sa.BigInteger(), nullable=False),
    sa.Column('included_root', sa.String(length=64), nullable=True),
    sa.Column('included_count', sa.BigInteger(), nullable=False),
    sa.Column('metadata_hash', sa.String(length=64), nullable=True),
    sa.Column('metadata_loaded', sa.Boolean(), nullable=False),
    sa.Column('rule_name', sa.String(length=64), nullable=True),
    sa.Column('rule_params', sa.JSON(), nullable=True),
    sa.Column('metrics', sa.JSON(), nullable=True),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=64), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['parent_hash'], ['model_versions.model_hash'], name=op.f('fk_model_versions_parent_hash_model_versions')),
    sa.PrimaryKeyConstraint('version', name=op.f('pk_model_versions')),
    sa.UniqueConstraint('model_hash', name=op.f('uq_model_versions_model_hash'))
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_versions_block_number'), ['block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_parent_hash'), ['parent_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_model_versions_round'), ['round'], unique=False)

    op.create_table('nodes',
    sa.Column('address', sa.String(length=42), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('registered_block', sa.BigInteger(), nullable=False),
    sa.Column('revoked_block', sa.BigInteger(), nullable=True),
    sa.PrimaryKeyConstraint('address', name=op.f('pk_nodes'))
    )
    op.create_table('rounds',
    sa.Column('round', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('base_model_hash', sa.String(length=64), nullable=False),
    sa.Column('deadline', UINT64, nullable=False),
    sa.Column('min_updates', sa.BigInteger(), nullable=False),
    sa.Column('state', sa.Enum('open', 'finalized', 'abandoned', name='round_state', native_enum=False, create_constraint=False, length=16), nullable=False),
    sa.Column('opened_block', sa.BigInteger(), nullable=False),
    sa.Column('opened_tx', sa.String(length=64), nullable=False),
    sa.Column('closed_block', sa.BigInteger(), nullable=True),
    sa.Column('abandon_reason', sa.Integer(), nullable=True),
    sa.CheckConstraint("state IN ('open', 'finalized', 'abandoned')", name=op.f('ck_rounds_round_state')),
    sa.PrimaryKeyConstraint('round', name=op.f('pk_rounds'))
    )
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_rounds_closed_block'), ['closed_block'], unique=False)
        batch_op.create_index(batch_op.f('ix_rounds_opened_block'), ['opened_block'], unique=False)

    op.create_table('updates',
    sa.Column('round', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('node', sa.String(length=42), nullable=False),
    sa.Column('update_hash', sa.String(length=64), nullable=False),
    sa.Column('num_samples', UINT64, nullable=False),
    sa.Column('block_number', sa.BigInteger(), nullable=False),
    sa.Column('tx_hash', sa.String(length=64), nullable=False),
    sa.Column('log_index', sa.Integer(), nullable=False),
    sa.Column('rejected_reason', sa.Integer(), nullable=True),
    sa.Column('rejected_block', sa.BigInteger(), nullable=True),
    sa.Column('included', sa.Boolean(), nullable=True),
    sa.ForeignKeyConstraint(['node'], ['nodes.address'], name=op.f('fk_updates_node_nodes')),
    sa.ForeignKeyConstraint(['round'], ['rounds.round'], name=op.f('fk_updates_round_rounds')),
    sa.PrimaryKeyConstraint('round', 'node', name=op.f('pk_updates'))
    )
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_updates_block_number'), ['block_number'], unique=False)
        batch_op.create_index(batch_op.f('ix_updates_node'), ['node'], unique=False)
        batch_op.create_index(batch_op.f('ix_updates_rejected_block'), ['rejected_block'], unique=False)
        batch_op.create_index(batch_op.f('ix_updates_update_hash'), ['update_hash'], unique=False)



def downgrade() -> None:
    """Downgrade schema."""
    with op.batch_alter_table('updates', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_updates_update_hash'))
        batch_op.drop_index(batch_op.f('ix_updates_rejected_block'))
        batch_op.drop_index(batch_op.f('ix_updates_node'))
        batch_op.drop_index(batch_op.f('ix_updates_block_number'))

    op.drop_table('updates')
    with op.batch_alter_table('rounds', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_rounds_opened_block'))
        batch_op.drop_index(batch_op.f('ix_rounds_closed_block'))

    op.drop_table('rounds')
    op.drop_table('nodes')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_versions_round'))
        batch_op.drop_index(batch_op.f('ix_model_versions_parent_hash'))
        batch_op.drop_index(batch_op.f('ix_model_versions_block_number'))

    op.drop_table('model_versions')
    op.drop_table('indexer_cursor')
    with op.batch_alter_table('chain_events', schema=None) as batch_op:
        batch_op.drop_index('ix_chain_events_block_number_log_index')

    op.drop_table('chain_events')
