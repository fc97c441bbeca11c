"""What re-deriving a version concludes: named findings, and the verdict that holds them.

`ok` exactly when there is no finding; the values of `FindingKind` are the stable strings the API,
the CLI and auditors' reports print.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any


class FindingKind(str, Enum):
    """What went wrong; the values are the stable strings the API and CLI print."""

    MISSING_BLOB = "missing_blob"  # the store has no blob with a hash the chain or metadata names
    HASH_MISMATCH = "hash_mismatch"  # a stored blob's bytes no longer hash to its name
    BLOB_UNREADABLE = "blob_unreadable"  # the store could not serve it (too large, unreachable)
    METADATA_MALFORMED = "metadata_malformed"  # not our JSON format, or missing/ill-typed fields
    METADATA_MISMATCH = "metadata_mismatch"  # well-formed, but disagrees with the chain (round, base, kind)
    PARENT_MISSING = "parent_missing"  # the parent is not an earlier committed version
    ROOT_MISMATCH = "root_mismatch"  # the metadata's updates do not give the on-chain Merkle root
    COUNT_MISMATCH = "count_mismatch"  # the metadata names a different number of updates than the chain
    NOT_SUBMITTED = "not_submitted"  # a named update was never submitted in that round
    SUBMISSION_MISMATCH = "submission_mismatch"  # submitted, but by another node or with another sample count
    REJECTED_INCLUDED = "rejected_included"  # the chain recorded a rejection of an update the model includes
    REJECTIONS_MISMATCH = "rejections_mismatch"  # the metadata's rejected list differs from the chain's
    TASK_NOT_INSTALLED = "task_not_installed"  # the pinned task is not installed here: its name, version, code hash say what to install
    TASK_MISMATCH = "task_mismatch"  # the installed task differs from the pinned spec (the field is named)
    BLOB_MALFORMED = "blob_malformed"  # a model or update blob is not canonical safetensors
    SHAPE_MISMATCH = "shape_mismatch"  # a model's or update's tensor names or shapes differ from the pinned manifest
    RULE_UNKNOWN = "rule_unknown"  # the metadata names an aggregation rule this build does not have
    AGGREGATION_FAILED = "aggregation_failed"  # the rule refused the recorded parameters or updates
    REDERIVED_MISMATCH = "rederived_mismatch"  # re-running the recorded recipe gives other bytes
    # The aggregator's decisions, re-checked against the policy pinned at genesis:
    POLICY_UNAVAILABLE = "policy_unavailable"  # the pinned policy cannot be read, so decisions go unchecked
    RULE_NOT_PINNED = "rule_not_pinned"  # the version was built with another rule or parameters than pinned
    CENSORED_SUBMISSION = "censored_submission"  # a submission of the round neither included nor rejected
    INCLUDED_TWICE = "included_twice"  # the metadata lists one node's submission more than once
    INCLUDED_INVALID = "included_invalid"  # an included update fails the pinned validation (e.g. norm bound)
    REJECTION_UNFOUNDED = "rejection_unfounded"  # re-validating the rejected bytes does not give the reason
    REJECTION_UNVERIFIABLE = "rejection_unverifiable"  # a content reason whose bytes nobody can re-check
    FORKED_LINEAGE = "forked_lineage"  # the round built on an older version than the latest
    ENCODING_MISMATCH = "encoding_mismatch"  # an included update is not in the encoding genesis pins, or a
    # rejection for that reason is not borne out by the blob
    PRIVACY_MISMATCH = "privacy_mismatch"  # a privacy claim, a recorded ε or a privacy rejection the
    # accountant does not reproduce from the nodes' claims


@dataclass(frozen=True)
class Finding:
    """One failed check: what kind, which object (`subject`, usually a hash) in which `role`."""

    kind: FindingKind
    subject: str
    role: str  # model, parent, metadata, genesis metadata, update, rule, task
    detail: str
    expected: Any = None
    actual: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "subject": self.subject,
            "role": self.role,
            "expected": self.expected,
            "actual": self.actual,
            "detail": self.detail,
        }


class RejectionStatus(str, Enum):
    """How a recorded rejection fared when re-checked (the values are printed as they are)."""

    CONFIRMED = "confirmed"  # re-validating the bytes under the pinned policy gives the same reason
    REFUTED = "refuted"  # it gives another outcome: a `rejection_unfounded` finding
    CORROBORATED = "corroborated"  # an availability reason, and the auditor's own fetch fails too
    UNVERIFIABLE = "unverifiable"  # see `RejectionCheck.detail` for why it cannot be decided


@dataclass(frozen=True)
class RejectionCheck:
    """One on-chain rejection of the round, and whether its reason held when re-checked."""

    node: str
    update_hash: str
    reason_code: int
    reason: str  # the code's name, or "unknown"
    status: RejectionStatus
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "update_hash": self.update_hash,
            "reason_code": self.reason_code,
            "reason": self.reason,
            "status": self.status.value,
            "detail": self.detail,
        }


@dataclass(frozen=True)
class Verdict:
    """The outcome of re-deriving one version; `ok` exactly when there is no finding."""

    model_hash: str
    version: int
    round: int
    kind: str  # "genesis" or "round"
    parent_hash: str | None
    metadata_hash: str | None
    rederived_hash: str | None
    rule: Mapping[str, Any] | None
    updates: tuple[str, ...]
    findings: tuple[Finding, ...]
    policy: Mapping[str, Any] | None = None  # the pinned policy the decisions were checked against
    policy_source: Mapping[str, Any] | None = None  # where it is pinned: genesis or a PolicyChanged event
    rejections: tuple[RejectionCheck, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """One line for people: what was re-derived and whether it matched."""
        if self.ok:
            if self.kind == "genesis":
                return (
                    f"version {self.version} (genesis) rebuilt from its pinned task and seed: "
                    "hash matches the chain"
                )
            rule = self.rule["name"] if self.rule else "?"
            return (
                f"version {self.version} re-derived from {len(self.updates)} updates with {rule}: "
                "hash matches the chain"
            )
        kinds = ", ".join(dict.fromkeys(finding.kind.value for finding in self.findings))
        return f"version {self.version} NOT verified: {len(self.findings)} finding(s) ({kinds})"

    def to_json(self) -> dict[str, Any]:
        return {
            "model_hash": self.model_hash,
            "version": self.version,
            "round": self.round,
            "kind": self.kind,
            "verified": self.ok,
            "summary": self.summary(),
            "parent_hash": self.parent_hash,
            "metadata_hash": self.metadata_hash,
            "rederived_hash": self.rederived_hash,
            "rule": dict(self.rule) if self.rule is not None else None,
            "updates": list(self.updates),
            "policy": dict(self.policy) if self.policy is not None else None,
            "policy_source": dict(self.policy_source) if self.policy_source is not None else None,
            "rejections": [check.to_json() for check in self.rejections],
            "findings": [finding.to_json() for finding in self.findings],
        }
