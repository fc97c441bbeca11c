"""What the chain says about rounds and nodes, read from events (never from the nodes' word).

Shared by the aggregator (which submissions to verify), the edge nodes (which round to train
for) and the demo's report.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from web3.exceptions import BlockNotFound

from ledger.chain import events
from ledger.chain.client import LedgerClient


def round_topic(round_number: int) -> str:
    return "0x" + round_number.to_bytes(32, "big").hex()


def round_opened_block(client: LedgerClient, round_number: int) -> int:
    """The block that opened the round: every submission and rejection of it lies at or after it."""
    opened = client.events(0, event_type=events.RoundOpened, topic_filters=[round_topic(round_number)])
    if not opened:
        raise LookupError(f"round {round_number} was never opened on this ledger")
    return int(opened[-1].ref.block_number)


def round_submissions(client: LedgerClient, round_number: int, from_block: int = 0) -> list[events.UpdateSubmitted]:
    """This round's `UpdateSubmitted` events, filtered on the indexed round topic."""
    return client.events(from_block, event_type=events.UpdateSubmitted, topic_filters=[round_topic(round_number)])


def round_rejections(client: LedgerClient, round_number: int, from_block: int = 0) -> list[events.UpdateRejected]:
    return client.events(from_block, event_type=events.UpdateRejected, topic_filters=[round_topic(round_number)])


def committed_models(client: LedgerClient, from_block: int = 0) -> list[events.ModelCommitted]:
    """Every committed version, genesis first."""
    return client.events(from_block, event_type=events.ModelCommitted)


@dataclass(frozen=True)
class LineageStep:
    version: int
    round: int
    model_hash: str
    parent_hash: str | None
    included_count: int
    metadata_hash: str | None


def lineage(client: LedgerClient, model_hash: str, from_block: int = 0) -> list[LineageStep]:
    """From `model_hash` back to genesis, following each version's parent as the chain recorded it."""
    by_hash = {event.model_hash: event for event in committed_models(client, from_block)}
    steps: list[LineageStep] = []
    current: str | None = model_hash
    while current is not None:
        event = by_hash.get(current)
        if event is None:
            raise LookupError(f"model {current} is not a committed version on this ledger")
        steps.append(
            LineageStep(
                version=event.version,
                round=event.round,
                model_hash=event.model_hash,
                parent_hash=event.parent_hash,
                included_count=event.included_count,
                metadata_hash=event.metadata_hash,
            )
        )
        current = event.parent_hash
    return steps


# --------------------------------------------------------------------------- reads that follow the chain


@dataclass
class _Cursor:
    """How far a follower has read: the last block and its hash (a changed hash means a reorg)."""

    block: int
    block_hash: str | None = None

    def advance(self, client: LedgerClient) -> tuple[int, int] | None:
        """The next block range to read, [first, head], or None when nothing is new.

        Reads the head once; if the block this cursor stands on no longer has the hash it had,
        the chain reorganized under us: the caller must forget what it read and start again.
        """
        head = client.w3.eth.get_block("latest")
        head_number = int(head["number"])
        first = self.block + 1 if self.block_hash is not None else self.block
        if head_number < first:
            return None
        self.block, self.block_hash = head_number, bytes(head["hash"]).hex()
        return first, head_number

    def still_on_chain(self, client: LedgerClient) -> bool:
        if self.block_hash is None:
            return True
        try:
            return bytes(client.w3.eth.get_block(self.block)["hash"]).hex() == self.block_hash
        except BlockNotFound:  # the chain went back below it
            return False


class SubmissionFeed:
    """A round's `UpdateSubmitted` events, read incrementally: each `read()` asks only for new blocks.

    Polling a round with one read from its `RoundOpened` block costs O(submissions so far) per
    poll, O(N²) over a round of N nodes; this costs O(new submissions) plus two block reads. A
    reorg under the feed (its last block's hash changed) makes it read the round again.
    """

    def __init__(self, client: LedgerClient, round_number: int, opened_block: int) -> None:
        self.client = client
        self.round = round_number
        self.opened_block = opened_block
        self._cursor = _Cursor(opened_block)
        self._seen: list[events.UpdateSubmitted] = []

    def read(self) -> list[events.UpdateSubmitted]:
        """Every submission to the round so far, in chain order."""
        if not self._cursor.still_on_chain(self.client):
            self._cursor, self._seen = _Cursor(self.opened_block), []
        span = self._cursor.advance(self.client)
        if span is not None:
            first, head = span
            self._seen.extend(
                self.client.events(first, head, event_type=events.UpdateSubmitted, topic_filters=[round_topic(self.round)])
            )
        return list(self._seen)


_FOLLOWED = (events.NodeRegistered, events.NodeRevoked, events.RoundOpened, events.ModelCommitted)


@dataclass
class FederationState:
    """What `FederationView` keeps: the active nodes, where each round opened, the latest version."""

    active: dict[str, None] = field(default_factory=dict)  # registration order
    opened_blocks: dict[int, int] = field(default_factory=dict)
    latest_model: str | None = None

    def apply(self, event: events.LedgerEvent) -> None:
        if isinstance(event, events.NodeRegistered):
            self.active[event.node] = None
        elif isinstance(event, events.NodeRevoked):
            self.active.pop(event.node, None)
        elif isinstance(event, events.RoundOpened):
            self.opened_blocks[event.round] = event.ref.block_number
        elif isinstance(event, events.ModelCommitted):
            self.latest_model = event.model_hash


class FederationView:
    """The facts a coordinator needs every round — active nodes, where a round opened, the latest
    version — kept current by reading only the blocks it has not read yet (registrations, rounds
    and commits: a few events per round, never the submissions).

    The first refresh reads these events from `start_block` once; later ones cost what is new,
    whatever the chain's length. A reorg under the view makes it read everything again.
    """

    def __init__(self, client: LedgerClient, start_block: int = 0) -> None:
        self.client = client
        self.start_block = start_block
        self._cursor = _Cursor(start_block)
        self._state = FederationState()

    def refresh(self) -> FederationState:
        if not self._cursor.still_on_chain(self.client):
            self._cursor, self._state = _Cursor(self.start_block), FederationState()
        span = self._cursor.advance(self.client)
        if span is not None:
            first, head = span
            names = [cls.event_name for cls in _FOLLOWED]
            for event in events.fetch_events(self.client.w3, self.client.address, first, head, event_names=names):
                self._state.apply(event)
        return self._state

    def active_nodes(self) -> list[str]:
        """Registered, unrevoked nodes, in registration order (as `active_nodes`)."""
        return list(self.refresh().active)

    def round_opened_block(self, round_number: int) -> int:
        """The block that opened the round (as `round_opened_block`)."""
        block = self.refresh().opened_blocks.get(round_number)
        if block is None:
            raise LookupError(f"round {round_number} was never opened on this ledger")
        return block

    def latest_model(self) -> str | None:
        """The model hash of the latest `ModelCommitted`, genesis included; None before genesis."""
        return self.refresh().latest_model


def chain_now(client: LedgerClient) -> int:
    """The latest block's timestamp: what `block.timestamp` deadlines are compared with."""
    return int(client.w3.eth.get_block("latest")["timestamp"])
