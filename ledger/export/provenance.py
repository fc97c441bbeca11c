"""`provenance.json`: an in-toto Statement v1 naming the exported files and where the model came from.

Subjects are the folder's files and their SHA-256; the predicate holds what the chain recorded about
the version (`ChainRecord`: the commit transaction and block, version, round, parent, included-update
Merkle root and count, metadata hash, genesis, watcher attestations and the quorum gate's counts), what its pinned metadata says
(`Recipe`: the aggregation rule and parameters, the task), and how the files were made (`export`).
model-signing has no API for a predicate of one's own, so the statement is a file inside the signed
folder: the signature covers it by digest. Pure: values in, bytes out, and back with validation.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.core.hashing import is_sha256_hex
from ledger.core.safe_json import UntrustedJsonError, canonical_json, parse_untrusted_json

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "urn:fedledger:model-export:v1"
PROVENANCE_NAME = "provenance.json"


class ProvenanceError(ValueError):
    """Bytes that are not a fedledger export statement; the message names the field at fault."""


@dataclass(frozen=True)
class Attestation:
    """One watcher's `VersionAttested` event for the version, and whether the admin has resolved it
    (`attestationOf`; a resolution is final, so it may appear after an export but never go away)."""

    auditor: str
    ok: bool
    report_hash: str
    transaction: str
    block: int
    resolved: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "auditor": self.auditor,
            "ok": self.ok,
            "reportHash": self.report_hash,
            "transaction": self.transaction,
            "block": self.block,
            "resolved": self.resolved,
        }


@dataclass(frozen=True)
class AttestationGate:
    """The contract's quorum (fixed at deploy) and its `attestationCounts` for the version when it was
    exported: ok and failed counts only grow; current ok (auditors still holding the role) and
    unresolved may move either way."""

    quorum: int = 0
    ok: int = 0
    current_ok: int = 0
    failed: int = 0
    unresolved: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "quorum": self.quorum,
            "okCount": self.ok,
            "currentOkCount": self.current_ok,
            "failedCount": self.failed,
            "unresolvedCount": self.unresolved,
        }


@dataclass(frozen=True)
class ChainRecord:
    """What the chain holds about one committed version: every field is re-read by `export verify`."""

    chain_id: int
    contract: str
    transaction: str  # the ModelCommitted event's transaction hash
    block: int
    model_hash: str
    version: int
    round: int
    parent_hash: str | None
    included_root: str | None
    included_count: int
    metadata_hash: str | None
    genesis_model_hash: str
    genesis_metadata_hash: str | None
    attestations: tuple[Attestation, ...] = ()
    gate: AttestationGate = AttestationGate()

    def to_json(self) -> dict[str, Any]:
        """The predicate's chain sections."""
        return {
            "ledger": {"chainId": self.chain_id, "contract": self.contract},
            "commit": {"transaction": self.transaction, "block": self.block},
            "model": {"hash": self.model_hash, "version": self.version, "round": self.round, "parentHash": self.parent_hash},
            "round": {
                "includedRoot": self.included_root,
                "includedCount": self.included_count,
                "metadataHash": self.metadata_hash,
            },
            "genesis": {"modelHash": self.genesis_model_hash, "metadataHash": self.genesis_metadata_hash},
            "attestations": [attestation.to_json() for attestation in self.attestations],
            "attestationGate": self.gate.to_json(),
        }


CHAIN_SECTIONS = ("ledger", "commit", "model", "round", "genesis")


@dataclass(frozen=True)
class Recipe:
    """What the version's pinned metadata says made it: the rule and parameters (None for genesis)
    and the task (its spec hash once tasks are pinned)."""

    rule: str | None
    params: Mapping[str, Any] = field(default_factory=dict)
    task: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        aggregation = None if self.rule is None else {"rule": self.rule, "params": dict(self.params)}
        return {"aggregation": aggregation, "task": dict(self.task)}


RECIPE_SECTIONS = ("aggregation", "task")


@dataclass(frozen=True)
class Statement:
    """A decoded statement: subject name → SHA-256, and the predicate as parsed JSON."""

    subjects: Mapping[str, str]
    predicate: Mapping[str, Any]

    @property
    def model_hash(self) -> str:
        return str(self.predicate["model"]["hash"])


def build_statement(
    subjects: Mapping[str, str], record: ChainRecord, recipe: Recipe, export: Mapping[str, Any]
) -> dict[str, Any]:
    """The statement as JSON-ready data; `subjects` maps file name → SHA-256 hex (listed by name)."""
    if not subjects:
        raise ValueError("a statement needs at least one subject")
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": subjects[name]}} for name in sorted(subjects)],
        "predicateType": PREDICATE_TYPE,
        "predicate": {**record.to_json(), **recipe.to_json(), "export": dict(export)},
    }


def encode_statement(statement: Mapping[str, Any]) -> bytes:
    """Canonical JSON and a final newline: the bytes that go into the folder and get signed."""
    return canonical_json(statement) + b"\n"


def decode_statement(data: bytes) -> Statement:
    """A statement from an export folder (untrusted until its signature and the chain say otherwise)."""
    try:
        document = parse_untrusted_json(data)
    except UntrustedJsonError as exc:
        raise ProvenanceError(f"{PROVENANCE_NAME} is not usable JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("_type") != STATEMENT_TYPE:
        raise ProvenanceError(f"{PROVENANCE_NAME} is not an in-toto Statement v1 ('_type' must be {STATEMENT_TYPE})")
    if document.get("predicateType") != PREDICATE_TYPE:
        raise ProvenanceError(f"{PROVENANCE_NAME}'s predicateType is {document.get('predicateType')!r}, not {PREDICATE_TYPE}")
    subjects: dict[str, str] = {}
    listed = document.get("subject")
    if not isinstance(listed, list) or not listed:
        raise ProvenanceError(f"{PROVENANCE_NAME} must list at least one subject")
    for index, subject in enumerate(listed):
        name = subject.get("name") if isinstance(subject, dict) else None
        digest = subject.get("digest") if isinstance(subject, dict) else None
        sha256 = digest.get("sha256") if isinstance(digest, dict) else None
        if not isinstance(name, str) or not _plain_file_name(name) or not is_sha256_hex(sha256) or name in subjects:
            raise ProvenanceError(f"subject[{index}] must be a distinct plain file name with a sha256 digest")
        subjects[name] = sha256
    predicate = document.get("predicate")
    if not isinstance(predicate, dict):
        raise ProvenanceError(f"{PROVENANCE_NAME}'s predicate must be an object")
    for section in (*CHAIN_SECTIONS, "export"):
        if not isinstance(predicate.get(section), dict):
            raise ProvenanceError(f"the predicate's {section!r} must be an object")
    if not is_sha256_hex(predicate["model"].get("hash")):
        raise ProvenanceError("the predicate's model.hash must be a SHA-256 hex digest")
    if not isinstance(predicate.get("attestations"), list):
        raise ProvenanceError("the predicate's 'attestations' must be a list")
    if not isinstance(predicate.get("attestationGate"), dict):
        raise ProvenanceError("the predicate's 'attestationGate' must be an object")
    return Statement(subjects=subjects, predicate=predicate)


def differences(claimed: Mapping[str, Any], actual: Mapping[str, Any], sections: tuple[str, ...]) -> list[tuple[str, Any, Any]]:
    """(field, claimed, actual) for each field of `sections` where the two predicates differ, by dotted name."""
    flat_claimed = _flatten({key: claimed.get(key) for key in sections})
    flat_actual = _flatten({key: actual.get(key) for key in sections})
    return [
        (name, flat_claimed.get(name), flat_actual.get(name))
        for name in sorted(set(flat_claimed) | set(flat_actual))
        if not _same(flat_claimed.get(name, _ABSENT), flat_actual.get(name, _ABSENT))
    ]


_ABSENT = object()


def _same(claimed: Any, actual: Any) -> bool:
    """Equal and of the same JSON type (`true` is not `1`, `2.0` is not `2`)."""
    return type(claimed) is type(actual) and claimed == actual


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, item in value.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and item:
            flat.update(_flatten(item, name + "."))
        else:
            flat[name] = item
    return flat


def _plain_file_name(name: str) -> bool:
    """A file directly in the folder: no separators, no `..`, nothing hidden."""
    return bool(name) and "/" not in name and "\\" not in name and not name.startswith(".")
