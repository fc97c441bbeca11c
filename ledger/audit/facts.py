"""What the chain recorded about a version: read once, then judged without touching the chain again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.rounds import committed_models


@dataclass(frozen=True)
class ChainFacts:
    """What the chain recorded that a version is judged against (read once, then judged purely)."""

    version: events.ModelCommitted
    committed: Mapping[str, events.ModelCommitted]  # every version, by model hash
    submissions: tuple[events.UpdateSubmitted, ...] = ()  # of the version's round
    rejections: tuple[events.UpdateRejected, ...] = ()

    @property
    def genesis(self) -> events.ModelCommitted | None:
        """Version 0, whose metadata pins the federation's policy."""
        return next((event for event in self.committed.values() if event.parent_hash is None), None)

    def numbered(self, version: int) -> events.ModelCommitted | None:
        return next((event for event in self.committed.values() if event.version == version), None)


def read_chain_facts(client: LedgerClient, model_hash: str, from_block: int = 0) -> ChainFacts | None:
    """The chain's record for `model_hash`, or None if it is not a committed version.

    A round's submissions and rejections all lie between its parent's commit (the round opens on a
    committed base) and its own, so only those blocks are searched for them, in one query.
    """
    committed = {event.model_hash: event for event in committed_models(client, from_block)}
    version = committed.get(model_hash)
    if version is None:
        return None
    if version.parent_hash is None:
        return ChainFacts(version=version, committed=committed)
    parent = committed.get(version.parent_hash)
    start = max(from_block, parent.ref.block_number) if parent is not None else from_block
    round_events = events.fetch_events(
        client.w3,
        client.address,
        start,
        version.ref.block_number,
        event_names=[events.UpdateSubmitted.event_name, events.UpdateRejected.event_name],
        topic_filters=["0x" + version.round.to_bytes(32, "big").hex()],
    )
    return ChainFacts(
        version=version,
        committed=committed,
        submissions=tuple(e for e in round_events if isinstance(e, events.UpdateSubmitted)),
        rejections=tuple(e for e in round_events if isinstance(e, events.UpdateRejected)),
    )
