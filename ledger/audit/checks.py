"""The checks a version must pass, each failure recorded as a named finding, never raised.

`Judgement` fetches and parses blobs on the auditor's behalf (re-hashing every byte, whatever the
store claims), finds the pinned task, and accumulates findings; `check_against_chain` compares what
the metadata claims with what the chain recorded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ledger.audit.facts import ChainFacts
from ledger.audit.verdict import Finding, FindingKind, RejectionCheck, Verdict
from ledger.chain import events
from ledger.core.aggregation import RULES
from ledger.core.hashing import sha256_hex
from ledger.core.merkle import merkle_root
from ledger.core.metadata import GenesisRecord, MetadataError, MetadataRecord, RoundRecord, decode
from ledger.core.policy import FederationPolicy
from ledger.core.serialization import MalformedBlob, deserialize_tensors
from ledger.core.errors import Unavailable
from ledger.core.task import Task, TaskError
from ledger.core.task_spec import TaskSpec, first_difference
from ledger.store.base import BlobNotFound, BlobStore, BlobStoreError, HashMismatch
from ledger.tasks.registry import load_installed_task
from ledger.tasks.spec import task_spec

# Room for the small built-in models and far beyond; a blob over this is not one of ours (it is still reported).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


@dataclass
class Judgement:
    """Accumulates findings while one version is judged; fetches go through here so none raises."""

    version: events.ModelCommitted
    store: BlobStore
    max_bytes: int
    task: Task | None = None  # the task to rebuild genesis with; None: the installed one the pin names
    findings: list[Finding] = field(default_factory=list)
    rederived_hash: str | None = None
    rule: Mapping[str, Any] | None = None
    updates: tuple[str, ...] = ()
    policy: FederationPolicy | None = None
    policy_source: Mapping[str, Any] | None = None  # which pinned blob (genesis or PolicyChanged) it came from
    rejections: list[RejectionCheck] = field(default_factory=list)

    @property
    def metadata_subject(self) -> str:
        return self.version.metadata_hash or "(none)"

    def find(
        self, kind: FindingKind, subject: str, role: str, detail: str, *, expected: Any = None, actual: Any = None
    ) -> None:
        self.findings.append(Finding(kind, subject, role, detail, expected, actual))

    def fetch(self, name: str, role: str) -> bytes | None:
        """The blob's bytes, re-hashed here too (never trust a store); None after recording why not."""
        got = self.get(name, role)
        if isinstance(got, Finding):
            self.findings.append(got)
            return None
        return got

    def get(self, name: str, role: str) -> bytes | Finding:
        """The blob's bytes re-hashed, or the finding that says why not (not recorded: see `fetch`)."""
        try:
            data = self.store.get(name)
        except BlobNotFound:
            return Finding(FindingKind.MISSING_BLOB, name, role, f"the store has no {role} blob with this hash")
        except HashMismatch as exc:
            return Finding(
                FindingKind.HASH_MISMATCH,
                name,
                role,
                f"the stored {role} blob was altered: its bytes no longer hash to its name",
                expected=name,
                actual=exc.actual,
            )
        except Unavailable:
            raise  # an unreachable store is no verdict on the version: the caller says "could not check"
        except BlobStoreError as exc:
            return Finding(FindingKind.BLOB_UNREADABLE, name, role, f"the store could not serve the {role} blob: {exc}")
        actual = sha256_hex(data)
        if actual != name:
            return Finding(
                FindingKind.HASH_MISMATCH,
                name,
                role,
                f"the store served {role} bytes that do not hash to the requested name",
                expected=name,
                actual=actual,
            )
        return data

    def tensors(self, name: str, role: str, blob: bytes) -> dict[str, torch.Tensor] | None:
        try:
            return deserialize_tensors(blob, max_bytes=self.max_bytes)
        except MalformedBlob as exc:
            self.find(FindingKind.BLOB_MALFORMED, name, role, f"the {role} blob is not canonical safetensors: {exc}")
            return None

    def fits(self, name: str, role: str, tensors: Mapping[str, torch.Tensor], spec: TaskSpec) -> bool:
        """Whether a model's tensors are the pinned manifest's (names and shapes); a finding if not."""
        shapes = {key: tuple(value.shape) for key, value in tensors.items()}
        expected = {t.name: t.shape for t in spec.tensors}
        if shapes == expected:
            return True
        self.find(
            FindingKind.SHAPE_MISMATCH,
            name,
            role,
            f"the {role}'s tensor names or shapes differ from the task manifest pinned at genesis",
            expected={k: list(v) for k, v in expected.items()},
            actual={k: list(v) for k, v in shapes.items()},
        )
        return False

    def metadata(self) -> MetadataRecord | None:
        """The version's metadata record, or None after recording why not."""
        metadata_hash = self.version.metadata_hash
        if metadata_hash is None:
            self.find(
                FindingKind.METADATA_MALFORMED, "(none)", "metadata", "the chain records no metadata hash for it"
            )
            return None
        return self.record(metadata_hash, "metadata")

    def record(self, metadata_hash: str, role: str) -> MetadataRecord | None:
        """The metadata record in blob `metadata_hash`, or None after recording why not."""
        blob = self.fetch(metadata_hash, role)
        if blob is None:
            return None
        try:
            return decode(blob)
        except MetadataError as exc:
            self.find(FindingKind.METADATA_MALFORMED, metadata_hash, role, str(exc))
            return None

    def pinned_genesis(self, genesis: events.ModelCommitted | None) -> GenesisRecord | None:
        """The genesis record (policy, task spec) a round is judged under, or None after recording why not."""
        if genesis is None or genesis.metadata_hash is None:
            self.find(
                FindingKind.METADATA_MALFORMED,
                "(none)",
                "genesis metadata",
                "the chain records no genesis metadata, so no task spec is pinned",
            )
            return None
        record = self.record(genesis.metadata_hash, "genesis metadata")
        if record is None:
            return None
        if not isinstance(record, GenesisRecord):
            self.find(
                FindingKind.METADATA_MALFORMED,
                genesis.metadata_hash,
                "genesis metadata",
                f"the genesis version's metadata is a {record.kind} record",
            )
            return None
        return record

    def installed_task(self, pinned: TaskSpec) -> Task | None:
        """The pinned task as installed here, if its spec is the pinned one; else None after a finding."""
        wanted = {"name": pinned.name, "version": pinned.version, "code_sha256": pinned.code_sha256}
        try:
            task = self.task if self.task is not None else load_installed_task(pinned.name)
        except TaskError as exc:
            self.find(
                FindingKind.TASK_NOT_INSTALLED,
                pinned.name,
                "task",
                f"install task {pinned.name!r} version {pinned.version!r} (code sha256 {pinned.code_sha256}) "
                f"to rebuild this version, or name it with --task package.module:attr ({exc})",
                expected=wanted,
            )
            return None
        try:
            local = task_spec(task, pinned.hyperparameters)
        except TaskError as exc:
            self.find(FindingKind.TASK_MISMATCH, pinned.name, "task", f"the installed task refuses the pinned spec: {exc}", expected=wanted)
            return None
        difference = first_difference(pinned, local)
        if difference is not None:
            self.find(
                FindingKind.TASK_MISMATCH,
                pinned.name,
                "task",
                f"the installed task differs from the one pinned at genesis at {difference.field}: "
                f"install task {pinned.name!r} version {pinned.version!r} (code sha256 {pinned.code_sha256})",
                expected=difference.pinned,
                actual=difference.local,
            )
            return None
        return task

    def known_rule(self, name: str, named_by: str) -> bool:
        """Whether this build can run rule `name` (`named_by`: who names it, for the finding)."""
        if name in RULES:
            return True
        self.find(
            FindingKind.RULE_UNKNOWN,
            name,
            "rule",
            f"{named_by} names rule {name!r}, which this build cannot run",
            expected=sorted(RULES),
            actual=name,
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
            policy=self.policy.to_json() if self.policy is not None else None,
            policy_source=self.policy_source,
            rejections=tuple(self.rejections),
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

    # Keyed by node: the contract takes one submission per node per round, but two nodes may
    # submit byte-identical updates, so an update hash alone does not name a submission.
    by_node = {event.node.lower(): event for event in facts.submissions}
    nodes_of_hash: dict[str, list[str]] = {}
    for submission in facts.submissions:
        nodes_of_hash.setdefault(submission.update_hash, []).append(submission.node)
    rejected_nodes = {event.node.lower(): event for event in facts.rejections}
    listed: set[str] = set()
    for item in record.included:
        node = item.node.lower()
        event = by_node.get(node)
        if event is None or event.update_hash != item.update_hash:
            submitters = nodes_of_hash.get(item.update_hash)
            if submitters is None:
                audit.find(
                    FindingKind.NOT_SUBMITTED,
                    item.update_hash,
                    "update",
                    f"no node submitted this update in round {version.round}",
                )
            else:
                audit.find(
                    FindingKind.SUBMISSION_MISMATCH,
                    item.update_hash,
                    "update",
                    "the metadata credits this update to another node than the one(s) that signed its submission",
                    expected=submitters,
                    actual=item.node,
                )
            continue
        if node in listed:
            audit.find(
                FindingKind.INCLUDED_TWICE,
                item.update_hash,
                "update",
                f"the metadata lists the submission of {event.node} more than once, weighting it twice",
                expected=1,
                actual=sum(1 for other in record.included if other.node.lower() == node),
            )
            continue
        listed.add(node)
        if event.num_samples != item.num_samples:
            audit.find(
                FindingKind.SUBMISSION_MISMATCH,
                item.update_hash,
                "update",
                "the metadata's sample count differs from the one the node submitted on chain",
                expected=event.num_samples,
                actual=item.num_samples,
            )
        rejection = rejected_nodes.get(node)
        if rejection is not None:
            audit.find(
                FindingKind.REJECTED_INCLUDED,
                item.update_hash,
                "update",
                f"the chain records this update as rejected (reason {rejection.reason_code}) yet it is included",
                expected="not rejected",
                actual=rejection.reason_code,
            )

    for submission in facts.submissions:
        node = submission.node.lower()
        if node not in listed and node not in rejected_nodes:
            audit.find(
                FindingKind.CENSORED_SUBMISSION,
                submission.update_hash,
                "update",
                f"{submission.node} submitted this update in round {version.round} "
                f"(block {submission.ref.block_number}); "
                "the version neither includes it nor does the chain record its rejection",
                expected="included or rejected",
                actual="neither",
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


def chain_samples(facts: ChainFacts) -> dict[tuple[str, str], int]:
    """(node, update hash) → the sample count the node signed on chain: the weight the rule must use."""
    return {(event.node.lower(), event.update_hash): event.num_samples for event in facts.submissions}
