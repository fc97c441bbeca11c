"""What the chain recorded about a version, and what its pinned metadata says made it.

`read_chain_record` is the only chain I/O: the version's `ModelCommitted` event (where and in
which transaction it landed), the genesis commit, the watchers' `VersionAttested` events with the
contract's `attestationOf` (resolved or not) for each, and its quorum and `attestationCounts`.
`recipe_of` is pure: the rule and task named by metadata blobs whose hashes the chain holds.
"""

from __future__ import annotations

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.rounds import committed_models, latest_model_hash
from ledger.core.hashing import normalize_hash
from ledger.core.metadata import MetadataError, RoundRecord, decode, decode_genesis
from ledger.export.provenance import Attestation, AttestationGate, ChainRecord, Recipe


class VersionNotFound(LookupError):
    """The hash is not a committed version on this ledger (or the ledger has none yet)."""


def resolve_model_hash(client: LedgerClient, text: str) -> str:
    """`latest` (the newest committed version) or a model hash (0x and upper case accepted)."""
    return latest_model_hash(client) if text == "latest" else normalize_hash(text)


def read_chain_record(client: LedgerClient, model_hash: str) -> ChainRecord | None:
    """The chain's record of `model_hash`, or None if it is not a committed version."""
    committed = committed_models(client)
    version = next((event for event in committed if event.model_hash == model_hash), None)
    genesis = next((event for event in committed if event.parent_hash is None), None)
    if version is None or genesis is None:
        return None
    attested = client.events(0, event_type=events.VersionAttested, topic_filters=["0x" + model_hash])
    counts = client.attestation_counts(model_hash)
    return ChainRecord(
        chain_id=client.chain_id,
        contract=client.address,
        transaction="0x" + version.ref.tx_hash,
        block=version.ref.block_number,
        model_hash=version.model_hash,
        version=version.version,
        round=version.round,
        parent_hash=version.parent_hash,
        included_root=version.included_root,
        included_count=version.included_count,
        metadata_hash=version.metadata_hash,
        genesis_model_hash=genesis.model_hash,
        genesis_metadata_hash=genesis.metadata_hash,
        attestations=tuple(
            Attestation(
                auditor=event.auditor,
                ok=event.ok,
                report_hash=event.report_hash,
                transaction="0x" + event.ref.tx_hash,
                block=event.ref.block_number,
                resolved=client.attestation_of(model_hash, event.auditor).resolved,
            )
            for event in attested
        ),
        gate=AttestationGate(
            quorum=client.attestation_quorum(),
            ok=counts.ok,
            current_ok=counts.current_ok,
            failed=counts.failed,
            unresolved=counts.unresolved,
        ),
    )


def recipe_of(version_metadata: bytes, genesis_metadata: bytes) -> Recipe:
    """The rule and parameters of a round version (None for genesis) and the task genesis pins."""
    genesis = decode_genesis(genesis_metadata)
    record = decode(version_metadata)
    spec = genesis.task
    task = {"name": spec.name, "version": spec.version, "specHash": spec.spec_hash, "seed": genesis.seed}
    if isinstance(record, RoundRecord):
        if record.task_spec != spec.spec_hash:
            raise MetadataError(f"the version's metadata names task spec {record.task_spec}, genesis pins {spec.spec_hash}")
        return Recipe(rule=record.rule.name, params=dict(record.rule.params), task=task)
    return Recipe(rule=None, task=task)
