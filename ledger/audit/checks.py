"""The checks a version must pass, each failure recorded as a named finding, never raised.

`Judgement` fetches and parses blobs on the auditor's behalf (re-hashing every byte, whatever the
store claims) and accumulates findings; `check_against_chain` compares what the metadata claims
with what the chain recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ledger.audit.facts import ChainFacts
from ledger.audit.verdict import Finding, FindingKind, Verdict
from ledger.chain import events
from ledger.core.encoding import DecodedUpdate, DecodeError, decode_update
from ledger.core.hashing import sha256_hex
from ledger.core.merkle import merkle_root
from ledger.core.metadata import GenesisRecord, MetadataError, MetadataRecord, RoundRecord, decode
from ledger.core.model import MODEL_NAME
from ledger.core.policy import FederationPolicy
from ledger.core.reasons import RejectReason
from ledger.core.serialization import MalformedBlob, deserialize_tensors
from ledger.store.base import BlobNotFound, BlobStore, BlobStoreError, HashMismatch

# Room for the tiny MLP and far beyond; a blob over this is not one of ours (it is still reported).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_ARCHITECTURES = {MODEL_NAME}
_DECODE_FINDINGS = {
    RejectReason.ENCODING_MISMATCH: FindingKind.ENCODING_MISMATCH,
    RejectReason.NAME_MISMATCH: FindingKind.SHAPE_MISMATCH,
    RejectReason.SHAPE_MISMATCH: FindingKind.SHAPE_MISMATCH,
}


@dataclass
class Judgement:
    """Accumulates findings while one version is judged; fetches go through here so none raises."""

    version: events.ModelCommitted
    store: BlobStore
    max_bytes: int
    findings: list[Finding] = field(default_factory=list)
    rederived_hash: str | None = None
    rule: Mapping[str, Any] | None = None
    updates: tuple[str, ...] = ()

    @property
    def metadata_subject(self) -> str:
        return self.version.metadata_hash or "(none)"

    def find(
        self, kind: FindingKind, subject: str, role: str, detail: str, *, expected: Any = None, actual: Any = None
    ) -> None:
        self.findings.append(Finding(kind, subject, role, detail, expected, actual))

    def fetch(self, name: str, role: str) -> bytes | None:
        """The blob's bytes, re-hashed here too (never trust a store); None after recording why not."""
        try:
            data = self.store.get(name)
        except BlobNotFound:
            self.find(FindingKind.MISSING_BLOB, name, role, f"the store has no {role} blob with this hash")
            return None
        except HashMismatch as exc:
            self.find(
                FindingKind.HASH_MISMATCH,
                name,
                role,
                f"the stored {role} blob was altered: its bytes no longer hash to its name",
                expected=name,
                actual=exc.actual,
            )
            return None
        except BlobStoreError as exc:
            self.find(FindingKind.BLOB_UNREADABLE, name, role, f"the store could not serve the {role} blob: {exc}")
            return None
        actual = sha256_hex(data)
        if actual != name:
            self.find(
                FindingKind.HASH_MISMATCH,
                name,
                role,
                f"the store served {role} bytes that do not hash to the requested name",
                expected=name,
                actual=actual,
            )
            return None
        return data

    def tensors(self, name: str, role: str, blob: bytes) -> dict[str, torch.Tensor] | None:
        try:
            return deserialize_tensors(blob, max_bytes=self.max_bytes)
        except MalformedBlob as exc:
            self.find(FindingKind.BLOB_MALFORMED, name, role, f"the {role} blob is not canonical safetensors: {exc}")
            return None

    def decoded_update(
        self, name: str, blob: bytes, base: Mapping[str, torch.Tensor], encoding: str
    ) -> DecodedUpdate | None:
        """The update decoded against its base in the pinned encoding, or None after recording why not."""
        try:
            return decode_update(blob, base, encoding, max_bytes=self.max_bytes)
        except DecodeError as exc:
            kind = _DECODE_FINDINGS.get(exc.reason, FindingKind.BLOB_MALFORMED)
            self.find(kind, name, "update", f"the update blob is not an update in the pinned encoding {encoding!r}: {exc.detail}")
            return None

    def pinned_policy(self, facts: ChainFacts) -> FederationPolicy | None:
        """The policy the chain's genesis pins (its encoding, DP policy), or None after recording why not."""
        genesis = next((event for event in facts.committed.values() if event.parent_hash is None), None)
        if genesis is None or genesis.metadata_hash is None:
            self.find(FindingKind.METADATA_MALFORMED, "(none)", "genesis metadata", "the chain records no genesis metadata to read the policy from")
            return None
        blob = self.fetch(genesis.metadata_hash, "genesis metadata")
        if blob is None:
            return None
        try:
            record = decode(blob)
        except MetadataError as exc:
            self.find(FindingKind.METADATA_MALFORMED, genesis.metadata_hash, "genesis metadata", str(exc))
            return None
        if not isinstance(record, GenesisRecord):
            self.find(FindingKind.METADATA_MALFORMED, genesis.metadata_hash, "genesis metadata", f"a {record.kind} record, not genesis")
            return None
        return record.policy

    def metadata(self) -> MetadataRecord | None:
        """The version's metadata record, or None after recording why not."""
        metadata_hash = self.version.metadata_hash
        if metadata_hash is None:
            self.find(
                FindingKind.METADATA_MALFORMED, "(none)", "metadata", "the chain records no metadata hash for it"
            )
            return None
        blob = self.fetch(metadata_hash, "metadata")
        if blob is None:
            return None
        try:
            return decode(blob)
        except MetadataError as exc:
            self.find(FindingKind.METADATA_MALFORMED, metadata_hash, "metadata", str(exc))
            return None

    def known_architecture(self, record: MetadataRecord) -> bool:
        architecture = record.architecture
        if architecture in _ARCHITECTURES:
            return True
        self.find(
            FindingKind.ARCHITECTURE_UNKNOWN,
            str(architecture),
            "architecture",
            f"the metadata names architecture {architecture!r}, which this build cannot rebuild",
            expected=sorted(_ARCHITECTURES),
            actual=architecture,
        )
        return False

    def compare_rederived(self, how: str) -> None:
        if self.rederived_hash != self.version.model_hash:
            self.find(
                FindingKind.REDERIVED_MISMATCH,
                self.version.model_hash,
                "model",
                f"{how} gives a model whose SHA-256 is not the one committed on chain",
                expected=self.version.model_hash,
                actual=self.rederived_hash,
            )

    def verdict(self) -> Verdict:
        return Verdict(
            model_hash=self.version.model_hash,
            version=self.version.version,
            round=self.version.round,
            kind="genesis" if self.version.parent_hash is None else "round",
            parent_hash=self.version.parent_hash,
            metadata_hash=self.version.metadata_hash,
            rederived_hash=self.rederived_hash,
            rule=self.rule,
            updates=self.updates,
            findings=tuple(self.findings),
        )


def check_against_chain(audit: Judgement, record: RoundRecord, facts: ChainFacts) -> None:
    """Everything the metadata claims that the chain can confirm or refute."""
    version = facts.version
    meta = audit.metadata_subject
    if record.round != version.round:
        audit.find(
            FindingKind.METADATA_MISMATCH,
            meta,
            "metadata",
            "the metadata names another round than the chain",
            expected=version.round,
            actual=record.round,
        )
    if record.base_model != version.parent_hash:
        audit.find(
            FindingKind.METADATA_MISMATCH,
            meta,
            "metadata",
            "the metadata names another base model than the chain's parent",
            expected=version.parent_hash,
            actual=record.base_model,
        )

    hashes = [item.update_hash for item in record.included]
    if len(hashes) != version.included_count:
        audit.find(
            FindingKind.COUNT_MISMATCH,
            meta,
            "metadata",
            f"the metadata names {len(hashes)} included updates, the chain recorded {version.included_count}",
            expected=version.included_count,
            actual=len(hashes),
        )
    root = merkle_root(bytes.fromhex(h) for h in hashes).hex()
    if root != version.included_root:
        audit.find(
            FindingKind.ROOT_MISMATCH,
            meta,
            "metadata",
            "the Merkle root of the metadata's included updates is not the root committed on chain",
            expected=version.included_root,
            actual=root,
        )

    submitted = {event.update_hash: event for event in facts.submissions}
    rejected_nodes = {event.node: event for event in facts.rejections}
    for item in record.included:
        event = submitted.get(item.update_hash)
        if event is None:
            audit.find(
                FindingKind.NOT_SUBMITTED,
                item.update_hash,
                "update",
                f"no node submitted this update in round {version.round}",
            )
            continue
        if event.node.lower() != item.node.lower():
            audit.find(
                FindingKind.SUBMISSION_MISMATCH,
                item.update_hash,
                "update",
                "the metadata credits this update to another node than the one that signed its submission",
                expected=event.node,
                actual=item.node,
            )
        if event.num_samples != item.num_samples:
            audit.find(
                FindingKind.SUBMISSION_MISMATCH,
                item.update_hash,
                "update",
                "the metadata's sample count differs from the one the node submitted on chain",
                expected=event.num_samples,
                actual=item.num_samples,
            )
        rejection = rejected_nodes.get(event.node)
        if rejection is not None:
            audit.find(
                FindingKind.REJECTED_INCLUDED,
                item.update_hash,
                "update",
                f"the chain records this update as rejected (reason {rejection.reason_code}) yet it is included",
                expected="not rejected",
                actual=rejection.reason_code,
            )

    on_chain = sorted((event.update_hash, event.node.lower(), event.reason_code) for event in facts.rejections)
    claimed = sorted((r.update_hash, r.node.lower(), r.reason_code) for r in record.rejected)
    if on_chain != claimed:
        audit.find(
            FindingKind.REJECTIONS_MISMATCH,
            meta,
            "metadata",
            "the metadata's rejected updates differ from the rejections recorded on chain",
            expected=[list(item) for item in on_chain],
            actual=[list(item) for item in claimed],
        )
