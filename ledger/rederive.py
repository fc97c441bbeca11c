"""The auditor's re-derivation of a committed model version, from the chain's record and a blob store.

For a round version: re-fetch (and re-hash) the model, its parent, the metadata blob and every
update the metadata names; check the named updates against the chain (Merkle root, count, each
one submitted in that round by that node with that sample count, none rejected); re-run the
recorded rule with its parameters; serialize canonically and compare the SHA-256 with the chain's
model hash. For genesis: rebuild the model from the recorded architecture and seed and compare.

Bad data never raises: every problem becomes a `Finding` in the `Verdict`. Only failing to read
the chain itself (`read_chain_facts`) raises, since then there is nothing to judge against.
The judging (`rederive`) touches nothing but the store it is given.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from ledger import events
from ledger.aggregation import RULES, Update, aggregate
from ledger.client import LedgerClient
from ledger.hashing import is_sha256_hex, sha256_hex
from ledger.merkle import merkle_root
from ledger.metadata import FORMAT
from ledger.model import MODEL_NAME, build_model, state_tensors
from ledger.rounds import committed_models
from ledger.safe_json import UntrustedJsonError, parse_untrusted_json
from ledger.serialization import MalformedArtifact, deserialize_tensors, serialize_tensors
from ledger.store import ArtifactNotFound, ArtifactStore, ArtifactStoreError, HashMismatch

# Room for the tiny MLP and far beyond; a blob over this is not one of ours (it is still reported).
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
_ARCHITECTURES = {MODEL_NAME}


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
    ARCHITECTURE_UNKNOWN = "architecture_unknown"  # this build cannot rebuild the named model
    BLOB_MALFORMED = "blob_malformed"  # a model or update blob is not canonical safetensors
    SHAPE_MISMATCH = "shape_mismatch"  # an update's tensor names or shapes differ from its base model's
    RULE_UNKNOWN = "rule_unknown"  # the metadata names an aggregation rule this build does not have
    AGGREGATION_FAILED = "aggregation_failed"  # the rule refused the recorded parameters or updates
    REDERIVED_MISMATCH = "rederived_mismatch"  # re-running the recorded recipe gives other bytes


@dataclass(frozen=True)
class Finding:
    """One failed check: what kind, which object (`subject`, usually a hash) in which `role`."""

    kind: FindingKind
    subject: str
    role: str  # model, parent, metadata, update, rule, architecture
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

    @property
    def ok(self) -> bool:
        return not self.findings

    def summary(self) -> str:
        """One line for people: what was re-derived and whether it matched."""
        if self.ok:
            if self.kind == "genesis":
                return (
                    f"version {self.version} (genesis) rebuilt from its architecture and seed: "
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
            "findings": [finding.to_json() for finding in self.findings],
        }


@dataclass(frozen=True)
class ChainFacts:
    """What the chain recorded that a version is judged against (read once, then judged purely)."""

    version: events.ModelCommitted
    committed: Mapping[str, events.ModelCommitted]  # every version, by model hash
    submissions: tuple[events.UpdateSubmitted, ...] = ()  # of the version's round
    rejections: tuple[events.UpdateRejected, ...] = ()


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


def verify_version(
    client: LedgerClient, store: ArtifactStore, model_hash: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> Verdict | None:
    """Read the chain, then re-derive; None if `model_hash` is not a committed version."""
    facts = read_chain_facts(client, model_hash)
    return None if facts is None else rederive(facts, store, max_bytes=max_bytes)


def rederive(facts: ChainFacts, store: ArtifactStore, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Verdict:
    """Judge one committed version against `facts`, fetching its blobs from `store`."""
    audit = _Audit(facts.version, store, max_bytes)
    if facts.version.parent_hash is None:
        _rederive_genesis(audit)
    else:
        _rederive_round(audit, facts)
    return audit.verdict()


# --------------------------------------------------------------------------- the two recipes


def _rederive_genesis(audit: _Audit) -> None:
    version = audit.version
    audit.fetch(version.model_hash, "model")
    metadata = audit.metadata()
    if metadata is None:
        return
    if metadata.get("kind") != "genesis":
        audit.find(
            FindingKind.METADATA_MISMATCH,
            audit.metadata_subject,
            "metadata",
            "the chain records a genesis version (no parent) but the metadata is not a genesis record",
            expected="genesis",
            actual=metadata.get("kind"),
        )
        return
    seed = metadata.get("seed")
    if type(seed) is not int:
        audit.find(
            FindingKind.METADATA_MALFORMED,
            audit.metadata_subject,
            "metadata",
            "a genesis record needs an integer seed",
            expected="int",
            actual=repr(seed),
        )
        return
    if not audit.known_architecture(metadata):
        return
    try:
        weights = state_tensors(build_model(seed))
    except (ValueError, RuntimeError, OverflowError) as exc:  # torch refuses seeds outside 64 bits
        audit.find(
            FindingKind.METADATA_MALFORMED,
            audit.metadata_subject,
            "metadata",
            f"the genesis seed cannot seed the model: {exc}",
            actual=str(seed),
        )
        return
    audit.rederived_hash = sha256_hex(serialize_tensors(weights))
    audit.compare_rederived(f"rebuilding {metadata['architecture']} from seed {seed}")


def _rederive_round(audit: _Audit, facts: ChainFacts) -> None:
    version = audit.version
    parent_hash = version.parent_hash
    assert parent_hash is not None
    audit.fetch(version.model_hash, "model")

    parent = facts.committed.get(parent_hash)
    parent_tensors = None
    if parent is None or parent.version >= version.version:
        audit.find(
            FindingKind.PARENT_MISSING,
            parent_hash,
            "parent",
            f"the parent of version {version.version} is not an earlier committed version on this ledger",
        )
    else:
        parent_blob = audit.fetch(parent_hash, "parent")
        if parent_blob is not None:
            parent_tensors = audit.tensors(parent_hash, "parent", parent_blob)

    metadata = audit.metadata()
    if metadata is None:
        return
    recipe = _parse_round_metadata(audit, metadata)
    if recipe is None:
        return
    _check_against_chain(audit, recipe, facts)
    audit.rule = {"name": recipe.rule_name, "params": dict(recipe.rule_params)}
    audit.updates = tuple(item.update_hash for item in recipe.included)
    if not audit.known_architecture(metadata):
        return

    # Weights come from the blobs; sample counts from the chain (the nodes' signed word), not the metadata.
    samples = {event.update_hash: event.num_samples for event in facts.submissions}
    updates: list[Update] = []
    for item in recipe.included:
        blob = audit.fetch(item.update_hash, "update")
        tensors = audit.tensors(item.update_hash, "update", blob) if blob is not None else None
        if tensors is None:
            continue
        if parent_tensors is not None and not audit.fits(item.update_hash, tensors, parent_tensors):
            continue
        updates.append(Update(item.update_hash, samples.get(item.update_hash, item.num_samples), tensors))
    if len(updates) != len(recipe.included) or not updates:
        return  # a missing or unusable input is already a finding; re-running without it proves nothing

    if recipe.rule_name not in RULES:
        audit.find(
            FindingKind.RULE_UNKNOWN,
            recipe.rule_name,
            "rule",
            f"the metadata names rule {recipe.rule_name!r}, which this build cannot run",
            expected=sorted(RULES),
            actual=recipe.rule_name,
        )
        return
    try:
        weights = aggregate(recipe.rule_name, updates, **recipe.rule_params)
        rederived = serialize_tensors(weights)
    except Exception as exc:  # the params are whatever the metadata says: any refusal is a finding
        audit.find(
            FindingKind.AGGREGATION_FAILED,
            recipe.rule_name,
            "rule",
            f"{recipe.rule_name} with params {dict(recipe.rule_params)} refused the recorded updates: {exc}",
        )
        return
    audit.rederived_hash = sha256_hex(rederived)
    audit.compare_rederived(f"re-running {recipe.rule_name} {dict(recipe.rule_params)} over {len(updates)} updates")


# --------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class _Included:
    update_hash: str
    node: str
    num_samples: int


@dataclass(frozen=True)
class _Recipe:
    round: int
    base_model: str
    rule_name: str
    rule_params: Mapping[str, Any]
    included: tuple[_Included, ...]
    rejected: tuple[tuple[str, str, int], ...]  # (update_hash, node, reason_code)


def _parse_round_metadata(audit: _Audit, metadata: Mapping[str, Any]) -> _Recipe | None:
    """The round's recipe, or None after recording a `metadata_malformed` finding."""
    problem = _round_metadata_problem(metadata)
    if problem is not None:
        audit.find(FindingKind.METADATA_MALFORMED, audit.metadata_subject, "metadata", problem)
        return None
    rule = metadata["rule"]
    return _Recipe(
        round=metadata["round"],
        base_model=metadata["base_model"],
        rule_name=rule["name"],
        rule_params=rule["params"],
        included=tuple(_Included(u["update_hash"], u["node"], u["num_samples"]) for u in metadata["included"]),
        rejected=tuple((r["update_hash"], r["node"], r["reason_code"]) for r in metadata.get("rejected", [])),
    )


def _round_metadata_problem(metadata: Mapping[str, Any]) -> str | None:
    """What makes `metadata` not a round record we can re-run, or None if nothing does."""
    if metadata.get("kind") != "round":
        return f"the chain records a round version (it has a parent) but the metadata kind is {metadata.get('kind')!r}"
    if type(metadata.get("round")) is not int:
        return "'round' must be an integer"
    if not is_sha256_hex(metadata.get("base_model")):
        return "'base_model' must be a SHA-256 hex digest"
    rule = metadata.get("rule")
    if not isinstance(rule, dict) or not isinstance(rule.get("name"), str) or not isinstance(rule.get("params"), dict):
        return "'rule' must be an object with a string 'name' and an object 'params'"
    included = metadata.get("included")
    if not isinstance(included, list) or not included:
        return "'included' must be a non-empty list"
    for index, item in enumerate(included):
        if not (
            isinstance(item, dict)
            and is_sha256_hex(item.get("update_hash"))
            and isinstance(item.get("node"), str)
            and type(item.get("num_samples")) is int
            and item["num_samples"] > 0
        ):
            return f"included[{index}] must have a SHA-256 'update_hash', a 'node' and a positive 'num_samples'"
    rejected = metadata.get("rejected", [])
    if not isinstance(rejected, list):
        return "'rejected' must be a list"
    for index, item in enumerate(rejected):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("update_hash"), str)
            and isinstance(item.get("node"), str)
            and type(item.get("reason_code")) is int
        ):
            return f"rejected[{index}] must have an 'update_hash', a 'node' and an integer 'reason_code'"
    return None


def _check_against_chain(audit: _Audit, recipe: _Recipe, facts: ChainFacts) -> None:
    """Everything the metadata claims that the chain can confirm or refute."""
    version = facts.version
    meta = audit.metadata_subject
    if recipe.round != version.round:
        audit.find(
            FindingKind.METADATA_MISMATCH,
            meta,
            "metadata",
            "the metadata names another round than the chain",
            expected=version.round,
            actual=recipe.round,
        )
    if recipe.base_model != version.parent_hash:
        audit.find(
            FindingKind.METADATA_MISMATCH,
            meta,
            "metadata",
            "the metadata names another base model than the chain's parent",
            expected=version.parent_hash,
            actual=recipe.base_model,
        )

    hashes = [item.update_hash for item in recipe.included]
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
    for item in recipe.included:
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
    claimed = sorted((h, node.lower(), code) for h, node, code in recipe.rejected)
    if on_chain != claimed:
        audit.find(
            FindingKind.REJECTIONS_MISMATCH,
            meta,
            "metadata",
            "the metadata's rejected updates differ from the rejections recorded on chain",
            expected=[list(item) for item in on_chain],
            actual=[list(item) for item in claimed],
        )


# --------------------------------------------------------------------------- plumbing




@dataclass
class _Audit:
    """Accumulates findings while one version is judged; fetches go through here so none raises."""

    version: events.ModelCommitted
    store: ArtifactStore
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
        except ArtifactNotFound:
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
        except ArtifactStoreError as exc:
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
        except MalformedArtifact as exc:
            self.find(FindingKind.BLOB_MALFORMED, name, role, f"the {role} blob is not canonical safetensors: {exc}")
            return None

    def fits(self, name: str, tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> bool:
        shapes = {key: tuple(value.shape) for key, value in tensors.items()}
        expected = {key: tuple(value.shape) for key, value in base.items()}
        if shapes == expected:
            return True
        self.find(
            FindingKind.SHAPE_MISMATCH,
            name,
            "update",
            "the update's tensor names or shapes differ from its base model's",
            expected={k: list(v) for k, v in expected.items()},
            actual={k: list(v) for k, v in shapes.items()},
        )
        return False

    def metadata(self) -> dict[str, Any] | None:
        """The version's metadata as a JSON object in our format, or None after recording why not."""
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
            metadata = parse_untrusted_json(blob)
        except UntrustedJsonError as exc:
            detail = f"the metadata is not usable JSON: {exc}"
            self.find(FindingKind.METADATA_MALFORMED, metadata_hash, "metadata", detail)
            return None
        if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
            actual = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
            self.find(
                FindingKind.METADATA_MALFORMED,
                metadata_hash,
                "metadata",
                f"the metadata is not a {FORMAT} object",
                expected=FORMAT,
                actual=actual,
            )
            return None
        return metadata

    def known_architecture(self, metadata: Mapping[str, Any]) -> bool:
        architecture = metadata.get("architecture")
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

