"""What a federation pinned at genesis (its policy and task spec), read from the chain and a blob store.

The aggregator on restart, each edge node before it trains, and the auditor judging a round all
compare against this record, never against their own defaults.
"""

from __future__ import annotations

from ledger.chain.client import LedgerClient
from ledger.chain.rounds import genesis_commit
from ledger.core.errors import LedgerError
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import GenesisRecord, MetadataError, decode
from ledger.store.base import BlobStore, BlobStoreError


class PinnedGenesisUnavailable(LedgerError):
    """The genesis metadata cannot be fetched or read, so nobody can tell what the federation pinned."""


def read_pinned_genesis(client: LedgerClient, store: BlobStore) -> GenesisRecord | None:
    """The genesis record whose hash the chain holds; None if no genesis is committed yet."""
    genesis = genesis_commit(client)
    if genesis is None:
        return None
    metadata_hash = genesis.metadata_hash
    if metadata_hash is None:
        raise PinnedGenesisUnavailable("the chain records no metadata hash for the genesis version")
    try:
        blob = store.get(metadata_hash)
    except BlobStoreError as exc:
        raise PinnedGenesisUnavailable(f"cannot fetch the genesis metadata {metadata_hash}: {exc}") from None
    if sha256_hex(blob) != metadata_hash:  # never trust a store
        raise PinnedGenesisUnavailable(f"the store served genesis metadata bytes that do not hash to {metadata_hash}")
    try:
        record = decode(blob)
    except MetadataError as exc:
        raise PinnedGenesisUnavailable(f"the genesis metadata {metadata_hash} is unusable: {exc}") from None
    if not isinstance(record, GenesisRecord):
        raise PinnedGenesisUnavailable(f"the genesis metadata {metadata_hash} is a {record.kind} record")
    return record
