"""The indexer: follows the ledger's events into the SQL index, batch by batch, and survives reorgs.

Each batch is one eth_getLogs over a block range ending `confirmations` blocks below the head,
written in one database transaction together with the cursor (last block and its hash), so a
killed indexer resumes where its last commit left off. Events are keyed by (tx hash, log index):
seeing one twice changes nothing. Before each batch the cursor's block hash is compared with the
chain's; on a mismatch the indexer walks back to the newest block it stored whose hash still
matches, deletes every row from the fork on, and indexes the new branch.

The derived tables are a function of the event log alone (plus metadata blobs, which are
re-hashed by the store before use), so `rebuild` reproduces them row for row.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker
from web3 import Web3
from web3.exceptions import BlockNotFound, Web3RPCError

from ledger.chain import events as ev
from ledger.core.errors import LedgerError
from ledger.index.db import transaction
from ledger.index.models import (
    DERIVED_TABLES,
    ChainEvent,
    IndexerCursor,
    ModelVersion,
    Node,
    Round,
    RoundStatus,
    Submission,
)
from ledger.core.merkle import merkle_root
from ledger.store.base import BlobStore, BlobStoreError

log = logging.getLogger(__name__)

CURSOR_ID = 1
DEFAULT_BATCH_BLOCKS = 2000
DEFAULT_POLL_SECONDS = 0.5


class IndexMismatch(LedgerError):
    """The database already mirrors another ledger (contract or chain)."""


@dataclass(frozen=True)
class IndexerConfig:
    batch_blocks: int = DEFAULT_BATCH_BLOCKS
    confirmations: int = 0
    poll_seconds: float = DEFAULT_POLL_SECONDS

    def __post_init__(self) -> None:
        if self.batch_blocks < 1:
            raise ValueError(f"batch_blocks must be at least 1, got {self.batch_blocks}")
        if self.confirmations < 0:
            raise ValueError(f"confirmations must be 0 or more, got {self.confirmations}")


@dataclass(frozen=True)
class Batch:
    """What one step did: indexed blocks [from_block, to_block], or rolled back to `reorg_to`."""

    from_block: int
    to_block: int
    events: int
    reorg_to: int | None = None


@dataclass
class RunStats:
    batches: int = 0
    events: int = 0
    reorgs: int = 0
    last_block: int | None = None
    seconds: float = 0.0
    history: list[Batch] = field(default_factory=list)

    def add(self, batch: Batch) -> None:
        self.batches += 1
        self.events += batch.events
        self.reorgs += batch.reorg_to is not None
        self.history.append(batch)
        if batch.reorg_to is None:
            self.last_block = batch.to_block


class Indexer:
    """Mirrors one ledger contract into one index database."""

    def __init__(
        self,
        w3: Web3,
        contract_address: str,
        sessions: sessionmaker[Session],
        *,
        start_block: int = 0,
        store: BlobStore | None = None,
        config: IndexerConfig = IndexerConfig(),
    ) -> None:
        self.w3 = w3
        self.address = Web3.to_checksum_address(contract_address)
        self.sessions = sessions
        self.start_block = start_block
        self.store = store
        self.config = config
        self.chain_id = int(w3.eth.chain_id)
        self._span = config.batch_blocks

    # ---------------------------------------------------------------- driving

    def run_once(self, *, on_batch: Callable[[Batch], None] | None = None) -> RunStats:
        """Index every confirmed block, then return (`fedledger index run --once`)."""
        stats = RunStats()
        started = time.perf_counter()
        self.fill_missing_metadata()
        while (batch := self.step()) is not None:
            stats.add(batch)
            if on_batch is not None:
                on_batch(batch)
        stats.seconds = time.perf_counter() - started
        stats.last_block = self.cursor().last_block
        return stats

    def follow(self, stop: threading.Event, *, on_batch: Callable[[Batch], None] | None = None) -> RunStats:
        """Keep indexing new blocks, polling every `poll_seconds`, until `stop` is set."""
        stats = RunStats()
        started = time.perf_counter()
        while not stop.is_set():
            stats_once = self.run_once(on_batch=on_batch)
            stats.batches += stats_once.batches
            stats.events += stats_once.events
            stats.reorgs += stats_once.reorgs
            stats.history.extend(stats_once.history)
            stop.wait(self.config.poll_seconds)
        stats.seconds = time.perf_counter() - started
        stats.last_block = self.cursor().last_block
        return stats

    def rebuild(self, *, on_batch: Callable[[Batch], None] | None = None) -> RunStats:
        """Delete every indexed row and index again from the start block."""
        with transaction(self.sessions) as session:
            for table in DERIVED_TABLES:
                session.execute(delete(table))
            session.execute(delete(IndexerCursor))
        log.info("index cleared: re-indexing %s from block %d", self.address, self.start_block)
        return self.run_once(on_batch=on_batch)

    def cursor(self) -> IndexerCursor:
        with transaction(self.sessions) as session:
            return self._cursor(session)

    # ---------------------------------------------------------------- one batch

    def step(self) -> Batch | None:
        """Index the next range of confirmed blocks (or undo a reorg); None when caught up."""
        with transaction(self.sessions) as session:
            cursor = self._cursor(session)
            if cursor.last_block is not None and self._block_hash(cursor.last_block) != cursor.last_block_hash:
                return self._roll_back(session, cursor)
            next_block = self.start_block if cursor.last_block is None else cursor.last_block + 1
            last_block, last_hash = cursor.last_block, cursor.last_block_hash

        safe_head = int(self.w3.eth.block_number) - self.config.confirmations
        if next_block > safe_head:
            return None
        to_block, to_hash, found = self._fetch(next_block, safe_head)
        # The range must come from one branch that still holds our last block: if either hash moved
        # while we read, a reorg ran under us; the next step sees it and rolls back.
        if self._block_hash(to_block) != to_hash or (
            last_block is not None and self._block_hash(last_block) != last_hash
        ):
            return Batch(next_block, to_block, 0, reorg_to=last_block)

        with transaction(self.sessions) as session:
            cursor = self._cursor(session)
            if cursor.last_block != last_block:  # another indexer moved it: start over from its cursor
                return Batch(next_block, to_block, 0, reorg_to=cursor.last_block)
            written = apply_events(session, found, self.store)
            cursor.last_block = to_block
            cursor.last_block_hash = to_hash
        if written:
            log.debug("blocks %d-%d: %d events", next_block, to_block, written)
        return Batch(next_block, to_block, written)

    def _fetch(self, first: int, safe_head: int) -> tuple[int, str | None, list[ev.LedgerEvent]]:
        """Events of [first, up to `span` blocks]; a node that refuses the range (too many logs,
        too many blocks) gets half of it, and later batches keep the smaller span."""
        while True:
            last = min(first + self._span - 1, safe_head)
            last_hash = self._block_hash(last)
            try:
                return last, last_hash, ev.fetch_events(self.w3, self.address, first, last)
            except (Web3RPCError, ValueError) as exc:
                if last == first:
                    raise
                self._span = max(1, (last - first + 1) // 2)
                log.info("eth_getLogs over blocks %d-%d refused (%s): trying %d blocks", first, last, exc, self._span)

    def fill_missing_metadata(self) -> int:
        """Load metadata blobs that were missing from the store when their version was indexed."""
        if self.store is None:
            return 0
        with transaction(self.sessions) as session:
            pending = session.scalars(
                select(ModelVersion)
                .where(ModelVersion.metadata_loaded.is_(False), ModelVersion.metadata_hash.is_not(None))
                .order_by(ModelVersion.version)
            ).all()
            return sum(load_metadata(session, self.store, version) for version in pending)

    # ---------------------------------------------------------------- chain and cursor

    def _block_hash(self, number: int) -> str | None:
        try:
            return bytes(self.w3.eth.get_block(number)["hash"]).hex()
        except BlockNotFound:
            return None

    def _cursor(self, session: Session) -> IndexerCursor:
        cursor = session.get(IndexerCursor, CURSOR_ID)
        if cursor is None:
            cursor = IndexerCursor(
                id=CURSOR_ID,
                chain_id=self.chain_id,
                contract_address=self.address,
                start_block=self.start_block,
                last_block=None,
                last_block_hash=None,
            )
            session.add(cursor)
            session.flush()
        elif cursor.contract_address != self.address or cursor.chain_id != self.chain_id:
            raise IndexMismatch(
                f"this index database mirrors ledger {cursor.contract_address} on chain {cursor.chain_id}, "
                f"not {self.address} on chain {self.chain_id}: point FEDLEDGER_DATABASE_URL at another "
                "database, or run `fedledger index rebuild` to replace it"
            )
        return cursor

    def _roll_back(self, session: Session, cursor: IndexerCursor) -> Batch:
        """Find the newest stored block still on the chain and delete everything after it."""
        assert cursor.last_block is not None
        ancestor: tuple[int, str] | None = None
        for number, block_hash in _stored_blocks_descending(session, below=cursor.last_block):
            if self._block_hash(number) == block_hash:
                ancestor = (number, block_hash)
                break
        fork = ancestor[0] + 1 if ancestor else cursor.start_block
        log.warning(
            "reorg: block %d is no longer %s on chain %d; rolling back to block %d",
            cursor.last_block,
            cursor.last_block_hash,
            self.chain_id,
            fork - 1,
        )
        roll_back_from(session, fork)
        previous = cursor.last_block
        cursor.last_block, cursor.last_block_hash = ancestor if ancestor else (None, None)
        return Batch(fork, previous, 0, reorg_to=cursor.last_block)


def _stored_blocks_descending(session: Session, *, below: int, page: int = 64) -> Iterable[tuple[int, str]]:
    """(block number, hash) of the blocks we stored events of, newest first, below `below`."""
    upper = below
    while True:
        rows = session.execute(
            select(ChainEvent.block_number, ChainEvent.block_hash)
            .where(ChainEvent.block_number < upper)
            .distinct()
            .order_by(ChainEvent.block_number.desc())
            .limit(page)
        ).all()
        if not rows:
            return
        for number, block_hash in rows:
            yield number, block_hash
        upper = rows[-1][0]


# --------------------------------------------------------------------------- writing events


_ARG_FIELDS: dict[type[ev.LedgerEvent], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls) if f.name != "ref") for cls in ev.EVENT_TYPES.values()
}


def event_args(event: ev.LedgerEvent) -> dict[str, Any]:
    """The decoded arguments of an event, as stored verbatim in `chain_events.args`."""
    return {name: getattr(event, name) for name in _ARG_FIELDS[type(event)]}


# Core statements on the tables (not the ORM classes), built once: the hot path of the indexer.
_ROUNDS, _SUBMISSIONS, _EVENTS = (cast(Table, model.__table__) for model in (Round, Submission, ChainEvent))
_INSERT_ROUNDS = insert(_ROUNDS)
_INSERT_UPDATES = insert(_SUBMISSIONS)
_INSERT_EVENTS = insert(_EVENTS)
_REJECT = (
    update(_SUBMISSIONS)
    .where(_SUBMISSIONS.c.round == bindparam("r_round"), _SUBMISSIONS.c.node == bindparam("r_node"))
    .values(rejected_reason=bindparam("r_reason"), rejected_block=bindparam("r_block"))
)


class _Writer:
    """Applies events in chain order. Round and update inserts and rejections are buffered and sent
    as one executemany each; any other event flushes them first (in that order: a rejection only
    needs its update row, an update its round row), so the result is the same as one by one."""

    def __init__(self, session: Session, store: BlobStore | None) -> None:
        self.session = session
        self.store = store
        self.rounds: list[dict[str, Any]] = []
        self.updates: list[dict[str, Any]] = []
        self.rejections: list[dict[str, Any]] = []

    def flush(self) -> None:
        for statement, rows in ((_INSERT_ROUNDS, self.rounds), (_INSERT_UPDATES, self.updates), (_REJECT, self.rejections)):
            if rows:
                self.session.execute(statement, rows)
                rows.clear()

    def apply(self, event: ev.LedgerEvent) -> None:
        ref = event.ref
        if isinstance(event, ev.UpdateSubmitted):
            self.updates.append(
                {
                    "round": event.round,
                    "node": event.node,
                    "update_hash": event.update_hash,
                    "num_samples": event.num_samples,
                    "block_number": ref.block_number,
                    "tx_hash": ref.tx_hash,
                    "log_index": ref.log_index,
                    "rejected_reason": None,
                    "rejected_block": None,
                    "included": None,
                }
            )
        elif isinstance(event, ev.UpdateRejected):
            self.rejections.append(
                {"r_round": event.round, "r_node": event.node, "r_reason": event.reason_code, "r_block": ref.block_number}
            )
        elif isinstance(event, ev.RoundOpened):
            self.rounds.append(
                {
                    "round": event.round,
                    "base_model_hash": event.base_model_hash,
                    "deadline": event.deadline,
                    "min_updates": event.min_updates,
                    "state": RoundStatus.OPEN,
                    "opened_block": ref.block_number,
                    "opened_tx": ref.tx_hash,
                    "closed_block": None,
                    "abandon_reason": None,
                }
            )
        else:
            self.flush()  # everything below reads or changes rows that buffered writes may create
            handler = _HANDLERS.get(type(event))
            if handler is not None:
                handler(self, event)

    def node_registered(self, event: ev.NodeRegistered) -> None:
        _set_node(self.session, event.node, registered_block=event.ref.block_number)

    def node_revoked(self, event: ev.NodeRevoked) -> None:
        self.session.execute(
            update(Node).where(Node.address == event.node).values(active=False, revoked_block=event.ref.block_number)
        )

    def round_abandoned(self, event: ev.RoundAbandoned) -> None:
        self.session.execute(
            update(Round)
            .where(Round.round == event.round)
            .values(state=RoundStatus.ABANDONED, closed_block=event.ref.block_number, abandon_reason=event.reason_code)
        )

    def model_committed(self, event: ev.ModelCommitted) -> None:
        ref = event.ref
        parent_depth = None
        if event.parent_hash is not None:
            parent_depth = self.session.scalar(
                select(ModelVersion.depth).where(ModelVersion.model_hash == event.parent_hash)
            )
        version = ModelVersion(
            version=event.version,
            model_hash=event.model_hash,
            parent_hash=event.parent_hash,
            round=event.round,
            depth=0 if parent_depth is None else parent_depth + 1,
            included_root=event.included_root,
            included_count=event.included_count,
            metadata_hash=event.metadata_hash,
            metadata_loaded=False,
            block_number=ref.block_number,
            tx_hash=ref.tx_hash,
            log_index=ref.log_index,
        )
        self.session.add(version)
        self.session.flush()
        if event.round > 0:
            self.session.execute(
                update(Round)
                .where(Round.round == event.round)
                .values(state=RoundStatus.FINALIZED, closed_block=ref.block_number)
            )
            _mark_included(self.session, version, _unrejected_hashes(self.session, event.round))
        if self.store is not None and version.metadata_hash is not None:
            load_metadata(self.session, self.store, version)


_HANDLERS: dict[type[ev.LedgerEvent], Callable[[_Writer, Any], None]] = {
    ev.NodeRegistered: _Writer.node_registered,
    ev.NodeRevoked: _Writer.node_revoked,
    ev.RoundAbandoned: _Writer.round_abandoned,
    ev.ModelCommitted: _Writer.model_committed,
}


def apply_events(session: Session, found: Sequence[ev.LedgerEvent], store: BlobStore | None = None) -> int:
    """Write `found` (one block range, chain order) unless already stored; returns how many were new."""
    if not found:
        return 0
    low = min(e.ref.block_number for e in found)
    high = max(e.ref.block_number for e in found)
    seen = {
        (tx_hash, log_index)
        for tx_hash, log_index in session.execute(
            select(ChainEvent.tx_hash, ChainEvent.log_index).where(ChainEvent.block_number.between(low, high))
        )
    }
    fresh = [e for e in found if (e.ref.tx_hash, e.ref.log_index) not in seen]
    if not fresh:
        return 0
    session.execute(
        _INSERT_EVENTS,
        [
            {
                "block_number": e.ref.block_number,
                "block_hash": e.ref.block_hash,
                "tx_hash": e.ref.tx_hash,
                "log_index": e.ref.log_index,
                "event_name": e.event_name,
                "args": event_args(e),
            }
            for e in fresh
        ],
    )
    writer = _Writer(session, store)
    for event in fresh:
        writer.apply(event)
    writer.flush()
    return len(fresh)


def _set_node(session: Session, address: str, *, registered_block: int) -> None:
    values = {"active": True, "registered_block": registered_block, "revoked_block": None}
    if session.get(Node, address) is None:
        session.execute(insert(Node), [{"address": address, **values}])
    else:
        session.execute(update(Node).where(Node.address == address).values(**values))


def _unrejected_hashes(session: Session, round_number: int) -> set[str]:
    return set(
        session.scalars(
            select(Submission.update_hash).where(Submission.round == round_number, Submission.rejected_reason.is_(None))
        )
    )


def _mark_included(session: Session, version: ModelVersion, candidates: set[str]) -> bool:
    """Set `included` on the round's updates if `candidates` is exactly the set under `includedRoot`."""
    if not candidates or version.included_root is None:
        return False
    if merkle_root(bytes.fromhex(h) for h in candidates).hex() != version.included_root:
        return False
    session.execute(
        update(Submission)
        .where(Submission.round == version.round)
        .values(included=Submission.update_hash.in_(sorted(candidates)) & Submission.rejected_reason.is_(None))
    )
    return True


# --------------------------------------------------------------------------- metadata blobs


@dataclass(frozen=True)
class MetadataSummary:
    """What the index keeps from a version's metadata blob."""

    rule_name: str | None
    rule_params: dict[str, Any] | None
    metrics: dict[str, Any] | None
    included_hashes: frozenset[str] | None
    privacy: dict[str, Any] | None = None
    policy: dict[str, Any] | None = None


def parse_metadata(blob: bytes) -> MetadataSummary | None:
    """The parts of a metadata record the index shows; None for bytes that are not one."""
    from ledger.core.metadata import MetadataError, RoundRecord, decode

    try:
        record = decode(blob)
    except MetadataError:
        return None
    if not isinstance(record, RoundRecord):
        return MetadataSummary(
            rule_name=None, rule_params=None, metrics=None, included_hashes=None, policy=record.policy.to_json()
        )
    return MetadataSummary(
        rule_name=record.rule.name,
        rule_params=dict(record.rule.params),
        metrics=dict(record.metrics),
        included_hashes=frozenset(u.update_hash for u in record.included),
        privacy=None if record.privacy is None else dict(record.privacy),
    )


def load_metadata(session: Session, store: BlobStore, version: ModelVersion) -> bool:
    """Fill rule, metrics, ε per node and genesis's policy from the metadata blob if the store has it
    (re-hashed on read)."""
    assert version.metadata_hash is not None
    try:
        blob = store.get(version.metadata_hash)
    except (BlobStoreError, OSError) as exc:
        log.debug("metadata %s of version %d not available: %s", version.metadata_hash, version.version, exc)
        return False
    summary = parse_metadata(blob)
    version.metadata_loaded = True
    if summary is not None:
        version.rule_name = summary.rule_name
        version.rule_params = summary.rule_params
        version.metrics = summary.metrics
        version.privacy = summary.privacy
        version.policy = summary.policy
        if version.round > 0 and summary.included_hashes is not None and _inclusion_unknown(session, version.round):
            _mark_included(session, version, set(summary.included_hashes))
    session.flush()
    return True


def _inclusion_unknown(session: Session, round_number: int) -> bool:
    return (
        session.scalar(select(Submission.round).where(Submission.round == round_number, Submission.included.is_(None)).limit(1))
        is not None
    )


# --------------------------------------------------------------------------- reorgs


def roll_back_from(session: Session, fork_block: int) -> None:
    """Undo every row and change made by events in blocks >= `fork_block`."""
    touched_nodes = {
        args["node"]
        for args in session.scalars(
            select(ChainEvent.args).where(
                ChainEvent.block_number >= fork_block,
                ChainEvent.event_name.in_(("NodeRegistered", "NodeRevoked")),
            )
        )
    }
    reopened = select(Round.round).where(Round.closed_block >= fork_block).scalar_subquery()
    session.execute(update(Submission).where(Submission.round.in_(reopened)).values(included=None))
    session.execute(delete(Submission).where(Submission.block_number >= fork_block))
    session.execute(
        update(Submission).where(Submission.rejected_block >= fork_block).values(rejected_reason=None, rejected_block=None)
    )
    # One statement: a version and its children go together (FKs are checked at statement end).
    session.execute(delete(ModelVersion).where(ModelVersion.block_number >= fork_block))
    session.execute(delete(Round).where(Round.opened_block >= fork_block))
    session.execute(
        update(Round)
        .where(Round.closed_block >= fork_block)
        .values(state=RoundStatus.OPEN, closed_block=None, abandon_reason=None)
    )
    session.execute(delete(ChainEvent).where(ChainEvent.block_number >= fork_block))
    for address in sorted(touched_nodes):
        _replay_node(session, address)


def _replay_node(session: Session, address: str) -> None:
    """Recompute one node's row from the node events still stored."""
    state: dict[str, Any] | None = None
    for name, block, args in session.execute(
        select(ChainEvent.event_name, ChainEvent.block_number, ChainEvent.args)
        .where(ChainEvent.event_name.in_(("NodeRegistered", "NodeRevoked")))
        .order_by(ChainEvent.block_number, ChainEvent.log_index)
    ):
        if args.get("node") != address:
            continue
        if name == "NodeRegistered":
            state = {"active": True, "registered_block": block, "revoked_block": None}
        elif state is not None:
            state = {**state, "active": False, "revoked_block": block}
    if state is None:
        session.execute(delete(Node).where(Node.address == address))
    elif session.get(Node, address) is None:
        session.execute(insert(Node), [{"address": address, **state}])
    else:
        session.execute(update(Node).where(Node.address == address).values(**state))
