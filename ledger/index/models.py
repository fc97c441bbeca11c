"""The index's tables: what the ledger's events say, shaped for the audit API's questions.

Every row is derived from events (`chain_events` keeps them verbatim), so the whole schema can be
dropped and rebuilt from the chain. Hashes are bare lowercase hex (what `sha256sum` prints),
addresses EIP-55 checksummed, as `ledger.chain.events` decodes them. Each derived row records the block
that created it, and each later change the block that made it, so a reorg can be undone by block.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, Optional

from sqlalchemy import (
    JSON,
    BigInteger,
    Dialect,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_SQLITE_INT_MAX = (1 << 63) - 1


class UInt64(TypeDecorator[int]):
    """A uint64 from the chain (numSamples, deadline) that no value can make the indexer crash on.

    Nodes choose numSamples freely, up to 2**64 - 1: NUMERIC(20) holds every such value exactly on
    PostgreSQL. SQLite has no exact integer above 2**63 - 1, so there the (absurd) larger values
    are stored as REAL: approximate, but recorded, where an INTEGER bind would raise.
    """

    impl = Numeric(20, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(Numeric(20, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is not None and dialect.name == "sqlite" and value > _SQLITE_INT_MAX:
            return float(value)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


# Reusable column types (SQLAlchemy 2.0 `Annotated` pattern).
Sha256Hex = Annotated[str, mapped_column(String(64))]
Address = Annotated[str, mapped_column(String(42))]
TxHash = Annotated[str, mapped_column(String(64))]
BlockNumber = Annotated[int, mapped_column(BigInteger)]
Uint64 = Annotated[int, mapped_column(UInt64())]


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {int: Integer()}


class RoundStatus(enum.Enum):
    """Where a round is, as the index stores it (text): the contract's `RoundState` minus NONE."""

    OPEN = "open"
    FINALIZED = "finalized"
    ABANDONED = "abandoned"


class Node(Base):
    """A node account: its latest registration and, if revoked since, when."""

    __tablename__ = "nodes"

    address: Mapped[Address] = mapped_column(primary_key=True)
    active: Mapped[bool]
    registered_block: Mapped[BlockNumber]
    revoked_block: Mapped[Optional[BlockNumber]]


class Round(Base):
    """One `RoundOpened`, and how it closed (`ModelCommitted` or `RoundAbandoned`), if it did."""

    __tablename__ = "rounds"

    round: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    base_model_hash: Mapped[Sha256Hex]
    deadline: Mapped[Uint64]
    min_updates: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[RoundStatus] = mapped_column(
        Enum(
            RoundStatus,
            name="round_state",
            native_enum=False,
            create_constraint=True,
            length=16,
            values_callable=lambda states: [state.value for state in states],
        )
    )
    opened_block: Mapped[BlockNumber] = mapped_column(index=True)
    opened_tx: Mapped[TxHash]
    closed_block: Mapped[Optional[BlockNumber]] = mapped_column(index=True)
    abandon_reason: Mapped[Optional[int]]


class Submission(Base):
    """One `UpdateSubmitted` (the contract allows one per node per round), its rejection and inclusion.

    `included` is True/False once the round's version is committed and the included set is known
    (the non-rejected submissions, or the metadata blob's list, whose Merkle root equals the
    chain's `includedRoot`); NULL while the round is open or when neither matches the root.
    """

    __tablename__ = "updates"

    round: Mapped[int] = mapped_column(BigInteger, ForeignKey("rounds.round"), primary_key=True, autoincrement=False)
    node: Mapped[Address] = mapped_column(ForeignKey("nodes.address"), primary_key=True, index=True)
    update_hash: Mapped[Sha256Hex] = mapped_column(index=True)
    num_samples: Mapped[Uint64]
    block_number: Mapped[BlockNumber] = mapped_column(index=True)
    tx_hash: Mapped[TxHash]
    log_index: Mapped[int]
    rejected_reason: Mapped[Optional[int]]
    rejected_block: Mapped[Optional[BlockNumber]] = mapped_column(index=True)
    included: Mapped[Optional[bool]]


class ModelVersion(Base):
    """One `ModelCommitted`; rule, metrics, ε per node (and genesis's policy) come from its metadata
    blob when the store has it."""

    __tablename__ = "model_versions"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    model_hash: Mapped[Sha256Hex] = mapped_column(unique=True)
    parent_hash: Mapped[Optional[Sha256Hex]] = mapped_column(ForeignKey("model_versions.model_hash"), index=True)
    round: Mapped[int] = mapped_column(BigInteger, index=True)  # 0 for genesis, which has no round row
    # Ancestors between this version and genesis (0 for genesis): a lineage's length without walking it.
    depth: Mapped[int] = mapped_column(BigInteger)
    included_root: Mapped[Optional[Sha256Hex]]
    included_count: Mapped[int] = mapped_column(BigInteger)
    metadata_hash: Mapped[Optional[Sha256Hex]]
    metadata_loaded: Mapped[bool] = mapped_column(default=False)
    rule_name: Mapped[Optional[str]] = mapped_column(String(64))
    rule_params: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    metrics: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON)
    # Round versions of a private federation: each node's cumulative ε as the accountant verified it.
    # (none_as_null: "no DP" is SQL NULL, which queries filter on, not the JSON text null)
    privacy: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))
    # Genesis: the federation policy it pins (rule, limits, update encoding, privacy policy).
    policy: Mapped[Optional[dict[str, Any]]] = mapped_column(JSON(none_as_null=True))
    block_number: Mapped[BlockNumber] = mapped_column(index=True)
    tx_hash: Mapped[TxHash]
    log_index: Mapped[int]


class ChainEvent(Base):
    """Every ledger event verbatim: idempotency on (tx hash, log index), reorg checks by block hash."""

    __tablename__ = "chain_events"
    __table_args__ = (
        UniqueConstraint("tx_hash", "log_index"),
        Index("ix_chain_events_block_number_log_index", "block_number", "log_index"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    block_number: Mapped[BlockNumber]
    block_hash: Mapped[TxHash]
    tx_hash: Mapped[TxHash]
    log_index: Mapped[int]
    event_name: Mapped[str] = mapped_column(String(32))
    args: Mapped[dict[str, Any]] = mapped_column(JSON)


class IndexerCursor(Base):
    """The one row saying which ledger this database mirrors and how far (the block and its hash)."""

    __tablename__ = "indexer_cursor"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract_address: Mapped[Address]
    start_block: Mapped[BlockNumber]
    last_block: Mapped[Optional[BlockNumber]]
    last_block_hash: Mapped[Optional[TxHash]]


# Children before parents: the order rows are deleted in (a rebuild, a reorg rollback).
DERIVED_TABLES = (Submission, ModelVersion, Round, Node, ChainEvent)
