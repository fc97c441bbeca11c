"""What the chain recorded about a version: read once, then judged without touching the chain again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.rounds import committed_models
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import GenesisRecord, MetadataError, decode_genesis
from ledger.store.base import BlobStore


@dataclass(frozen=True)
class ChainFacts:
    """What the chain recorded that a version is judged against (read once, then judged purely)."""

    version: events.ModelCommitted
    committed: Mapping[str, events.ModelCommitted]  # every version, by model hash
    submissions: tuple[events.UpdateSubmitted, ...] = ()  # of the version's round
    rejections: tuple[events.UpdateRejected, ...] = ()
    earlier_submissions: tuple[events.UpdateSubmitted, ...] = ()  # of every earlier round (what nodes spent)


def read_chain_facts(client: LedgerClient, model_hash: str, from_block: int = 0) -> ChainFacts | None:
    """The chain's record for `model_hash`, or None if it is not a committed version.

    A round's submissions and rejections all lie between its parent's commit (the round opens on a
    committed base) and its own, so only those blocks are searched for them, in one query; a second
    query reads every earlier round's submissions, which the privacy re-checks need.
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
    # Earlier rounds' submissions (what each node spent before): an abandoned round between the
    # parent and this one has its submissions after the parent's commit, so search from the start.
    earlier = events.fetch_events(
        client.w3, client.address, from_block, version.ref.block_number, event_names=[events.UpdateSubmitted.event_name]
    )
    return ChainFacts(
        version=version,
        committed=committed,
        submissions=tuple(e for e in round_events if isinstance(e, events.UpdateSubmitted)),
        rejections=tuple(e for e in round_events if isinstance(e, events.UpdateRejected)),
        earlier_submissions=tuple(
            e for e in earlier if isinstance(e, events.UpdateSubmitted) and e.round < version.round
        ),
    )


def read_genesis(client: LedgerClient, store: BlobStore, *, from_block: int = 0) -> GenesisRecord:
    """The genesis record the chain pins (the task spec, seed, the federation's policy), read through
    `store` and re-hashed; `LookupError` if there is no genesis yet, `MetadataError` if unreadable."""
    versions = committed_models(client, from_block)
    if not versions or versions[0].metadata_hash is None:
        raise LookupError("no genesis with a metadata blob is committed on this ledger yet")
    metadata_hash = versions[0].metadata_hash
    blob = store.get(metadata_hash)
    if sha256_hex(blob) != metadata_hash:  # never trust a store
        raise MetadataError(f"the store served genesis metadata whose bytes do not hash to {metadata_hash}")
    return decode_genesis(blob)
