"""What the chain recorded about a version: read once, then judged without touching the chain again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.chain.mirror import ChainMirror, ChainRecord
from ledger.chain.rounds import committed_models
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import GenesisRecord, MetadataError, decode_genesis, decode_policy
from ledger.core.policy import FederationPolicy
from ledger.store.base import BlobStore


@dataclass(frozen=True)
class ChainFacts:
    """What the chain recorded that a version is judged against (read once, then judged purely)."""

    version: events.ModelCommitted
    committed: Mapping[str, events.ModelCommitted]  # every version, by model hash
    submissions: tuple[events.UpdateSubmitted, ...] = ()  # of the version's round
    rejections: tuple[events.UpdateRejected, ...] = ()
    earlier_submissions: tuple[events.UpdateSubmitted, ...] = ()  # of every earlier round (what nodes spent)
    opened: events.RoundOpened | None = None  # the version's round's opening
    # Up to the version's commit: policy changes, and what decided which versions rounds could open on.
    governance: tuple[events.LedgerEvent, ...] = ()
    attestation_quorum: int = 0

    @property
    def genesis(self) -> events.ModelCommitted | None:
        """Version 0, whose metadata pins the federation's policy."""
        return next((event for event in self.committed.values() if event.parent_hash is None), None)

    def numbered(self, version: int) -> events.ModelCommitted | None:
        return next((event for event in self.committed.values() if event.version == version), None)

    @property
    def policy_change(self) -> events.PolicyChanged | None:
        """The last `PolicyChanged` in force for the version's round (None: genesis's policy holds)."""
        return events.policy_change_for(self.governance, self.version.round)


def facts_from_record(record: ChainRecord, model_hash: str, *, attestation_quorum: int) -> ChainFacts | None:
    """The chain's record of `model_hash` (None if it is not a committed version), from a `ChainRecord`.

    Governance events (policy changes, attestations, auditors) count up to the version's commit:
    what could have decided how its round was run.
    Every earlier round's submissions come too: what each node spent, for the privacy re-checks.
    """
    version = record.versions.get(model_hash)
    if version is None:
        return None
    if version.parent_hash is None:
        return ChainFacts(version=version, committed=dict(record.versions), attestation_quorum=attestation_quorum)
    before = version.ref.block_number
    return ChainFacts(
        version=version,
        committed=dict(record.versions),
        submissions=tuple(record.submissions.get(version.round, {}).values()),
        rejections=tuple(record.rejections.get(version.round, {}).values()),
        earlier_submissions=tuple(
            e
            for number in sorted(record.submissions)
            if number < version.round
            for e in record.submissions[number].values()
            if e.ref.block_number <= before
        ),
        opened=record.opened.get(version.round),
        governance=tuple(e for e in record.governance if e.ref.block_number <= before),
        attestation_quorum=attestation_quorum,
    )


def read_chain_facts(client: LedgerClient, model_hash: str, from_block: int = 0) -> ChainFacts | None:
    """`facts_from_record` over the ledger's events read now, from `from_block` (one `eth_getLogs`)."""
    record = ChainMirror(client.w3, client.address, from_block=from_block).record()
    return facts_from_record(record, model_hash, attestation_quorum=client.attestation_quorum())


def could_open_on(facts: ChainFacts, model_hash: str, block: int) -> bool:
    """Whether the quorum gate let a round open on `model_hash` at `block` (always, without a gate).

    The contract's rule, replayed from events: at least `attestation_quorum` ok attestations by
    accounts that held the auditor role at `block`, and no failing attestation left unresolved.
    """
    quorum = facts.attestation_quorum
    if quorum == 0:
        return True
    auditors: set[str] = set()
    ok: set[str] = set()
    failing: set[str] = set()
    for event in facts.governance:
        if event.ref.block_number > block:
            break
        if isinstance(event, events.AuditorSet):
            (auditors.add if event.enabled else auditors.discard)(event.account)
        elif isinstance(event, events.VersionAttested) and event.model_hash == model_hash:
            (ok if event.ok else failing).add(event.auditor)
        elif isinstance(event, events.AttestationResolved) and event.model_hash == model_hash:
            failing.discard(event.auditor)
    return len(ok & auditors) >= quorum and not failing


def read_genesis(client: LedgerClient, store: BlobStore, *, from_block: int = 0) -> GenesisRecord:
    """The genesis record the chain pins (the task spec, seed, the federation's policy), read through
    `store` and re-hashed; `LookupError` if there is no genesis yet, `MetadataError` if unreadable."""
    versions = committed_models(client, from_block)
    if not versions or versions[0].metadata_hash is None:
        raise LookupError("no genesis with a metadata blob is committed on this ledger yet")
    return decode_genesis(_pinned_blob(store, versions[0].metadata_hash, "genesis metadata"))


@dataclass(frozen=True)
class PolicyInForce:
    policy: FederationPolicy
    source: str  # where the chain pinned it, for messages: genesis, or which PolicyChanged


def read_policy_in_force(client: LedgerClient, store: BlobStore, round_number: int, *, from_block: int = 0) -> PolicyInForce:
    """The policy round `round_number` runs under, by the rule the auditor judges it by
    (`events.policy_change_for`): the last `PolicyChanged` for it, else genesis's; its blob read
    through `store` and re-hashed. `LookupError`, `BlobStoreError` or `MetadataError` if unreadable."""
    changes = client.events(from_block, event_type=events.PolicyChanged)
    change = events.policy_change_for(changes, round_number)
    if change is None:
        return PolicyInForce(read_genesis(client, store, from_block=from_block).policy, "genesis")
    policy = decode_policy(_pinned_blob(store, change.policy_hash, "policy"))
    return PolicyInForce(policy, f"PolicyChanged from round {change.from_round} (block {change.ref.block_number})")


class PolicyBook:
    """`read_policy_in_force` for a process that asks every round (the aggregator): genesis's policy
    is read once (it never changes) and `PolicyChanged` events only from the block after the last
    one read, so a round's question costs the new blocks, not the chain's history. A chain that went
    back under what was read is read again from `from_block`."""

    def __init__(self, client: LedgerClient, store: BlobStore, *, from_block: int = 0) -> None:
        self.client, self.store, self.from_block = client, store, from_block
        self._genesis: FederationPolicy | None = None
        self._changes: list[events.PolicyChanged] = []
        self._read_to = from_block - 1  # the last block whose PolicyChanged events were read
        self._read_to_hash: bytes | None = None

    def in_force(self, round_number: int) -> PolicyInForce:
        """As `read_policy_in_force(client, store, round_number)`."""
        head = self.client.w3.eth.get_block("latest")
        if self._read_to_hash is not None and self._block_hash(self._read_to) != self._read_to_hash:
            self._changes, self._read_to = [], self.from_block - 1  # the chain went back: read again
        number = int(head["number"])
        if number > self._read_to:
            self._changes += self.client.events(self._read_to + 1, number, event_type=events.PolicyChanged)
            self._read_to, self._read_to_hash = number, bytes(head["hash"])
        change = events.policy_change_for(self._changes, round_number)
        if change is not None:
            policy = decode_policy(_pinned_blob(self.store, change.policy_hash, "policy"))
            return PolicyInForce(policy, f"PolicyChanged from round {change.from_round} (block {change.ref.block_number})")
        if self._genesis is None:
            self._genesis = read_genesis(self.client, self.store, from_block=self.from_block).policy
        return PolicyInForce(self._genesis, "genesis")

    def _block_hash(self, number: int) -> bytes | None:
        try:
            return bytes(self.client.w3.eth.get_block(number)["hash"])
        except Exception:  # gone: the chain is shorter than what was read
            return None


def _pinned_blob(store: BlobStore, blob_hash: str, what: str) -> bytes:
    blob = store.get(blob_hash)
    if sha256_hex(blob) != blob_hash:  # never trust a store
        raise MetadataError(f"the store served {what} whose bytes do not hash to {blob_hash}")
    return blob
