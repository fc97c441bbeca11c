"""The auditor's re-derivation of a committed model version, from the chain's record and a blob store.

For a round version: re-fetch (and re-hash) the model, its parent, the metadata blob, the genesis
metadata (which pins the policy and the task spec) and every update the metadata names; check the
named updates against the chain (Merkle root, count, each one submitted in that round by that node
with that sample count, none rejected, none a copy of an earlier submission, and no submission
left neither included nor rejected);
check the aggregator's decisions against the policy in force for the round, pinned at genesis or
by `PolicyChanged` (`ledger.audit.decisions`: rule and parameters, each inclusion decoded in the
pinned encoding against the parent's trainable tensors and re-validated, each rejection's reason
re-checked, the parent the latest version it could build on); re-check every privacy claim,
recorded ε and privacy rejection (`ledger.audit.privacy`); re-run the recorded rule with its
parameters, copy the frozen tensors from the parent, serialize canonically and compare the SHA-256
with the chain's model hash. A round needs only the pinned manifest, not the task's code. For
genesis: find the pinned task (installed, or given), check its spec is the pinned one, rebuild the
model from the recorded seed and compare.

Bad data never raises: every problem becomes a `Finding` in the `Verdict`. Only failing to read
the chain itself (`read_chain_facts`) raises, since then there is nothing to judge against.
The judging (`rederive`) touches nothing but the store it is given.
"""

from __future__ import annotations

from ledger.audit.checks import DEFAULT_MAX_BYTES, Judgement, check_against_chain
from ledger.audit.decisions import (
    check_included_originals,
    check_parent_is_latest,
    check_pinned_recipe,
    policy_in_force,
    recheck_rejections,
    validated_updates,
)
from ledger.audit.facts import ChainFacts, read_chain_facts
from ledger.audit.privacy import check_privacy
from ledger.audit.verdict import FindingKind, Verdict
from ledger.chain.client import LedgerClient
from ledger.core.aggregation import aggregate
from ledger.core.hashing import sha256_hex
from ledger.core.manifest import trainable_part, with_frozen
from ledger.core.metadata import GenesisRecord, RoundRecord
from ledger.core.model import state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.task import Task
from ledger.store.base import BlobStore


def verify_version(
    client: LedgerClient, store: BlobStore, model_hash: str, *, max_bytes: int = DEFAULT_MAX_BYTES, task: Task | None = None
) -> Verdict | None:
    """Read the chain, then re-derive; None if `model_hash` is not a committed version."""
    facts = read_chain_facts(client, model_hash)
    return None if facts is None else rederive(facts, store, max_bytes=max_bytes, task=task)


def rederive(facts: ChainFacts, store: BlobStore, *, max_bytes: int = DEFAULT_MAX_BYTES, task: Task | None = None) -> Verdict:
    """Judge one committed version against `facts`, fetching its blobs from `store`.

    `task` rebuilds genesis instead of the installed task the pin names (its spec must still match).
    """
    audit = Judgement(facts.version, store, max_bytes, task)
    if facts.version.parent_hash is None:
        _rederive_genesis(audit)
    else:
        _rederive_round(audit, facts)
    return audit.verdict()


def _rederive_genesis(audit: Judgement) -> None:
    version = audit.version
    audit.fetch(version.model_hash, "model")
    record = audit.metadata()
    if record is None:
        return
    if not isinstance(record, GenesisRecord):
        audit.find(
            FindingKind.METADATA_MISMATCH,
            audit.metadata_subject,
            "metadata",
            "the chain records a genesis version (no parent) but the metadata is not a genesis record",
            expected="genesis",
            actual=record.kind,
        )
        return
    audit.policy = record.policy
    audit.policy_source = {"event": "genesis", "blob": version.metadata_hash, "from_round": 0}
    audit.known_rule(record.policy.rule, "the policy pinned at genesis")
    task = audit.installed_task(record.task)
    if task is None:
        return
    seed = record.seed
    try:
        weights = state_tensors(task.build_model(seed))
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
    audit.compare_rederived(f"rebuilding task {record.task.name!r} from seed {seed}")


def _rederive_round(audit: Judgement, facts: ChainFacts) -> None:
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
    check_parent_is_latest(audit, facts)
    genesis = audit.pinned_genesis(facts.genesis)
    policy = policy_in_force(audit, facts, genesis)

    record = audit.metadata()
    if record is None:
        return
    if not isinstance(record, RoundRecord):
        audit.find(
            FindingKind.METADATA_MALFORMED,
            audit.metadata_subject,
            "metadata",
            f"the chain records a round version (it has a parent) but the metadata kind is {record.kind!r}",
        )
        return
    check_against_chain(audit, record, facts)
    check_included_originals(audit, record, facts)
    if policy is not None:
        check_pinned_recipe(audit, record, policy)
    audit.rule = {"name": record.rule.name, "params": dict(record.rule.params)}
    audit.updates = tuple(item.update_hash for item in record.included)
    if genesis is None:
        return
    spec = genesis.task
    if record.task_spec != spec.spec_hash:
        audit.find(
            FindingKind.METADATA_MISMATCH,
            audit.metadata_subject,
            "metadata",
            "the metadata names another task spec than the one pinned at genesis",
            expected=spec.spec_hash,
            actual=record.task_spec,
        )
        return
    # Updates carry exactly the trainable tensors of the pinned manifest: they are decoded and
    # validated against the parent's trainable part, and the frozen rest is copied from the parent.
    travelling = None
    if parent_tensors is not None and audit.fits(parent_hash, "parent", parent_tensors, spec):
        travelling = trainable_part(parent_tensors, spec)
    recheck_rejections(audit, facts, travelling, policy)

    updates, claims = validated_updates(audit, record, facts, travelling, policy)
    if policy is not None:
        check_privacy(audit, record, facts, policy, claims)
    if parent_tensors is None or travelling is None or len(updates) != len(record.included) or not updates:
        return  # a missing or unusable input is already a finding; re-running without it proves nothing

    if not audit.known_rule(record.rule.name, "the metadata"):
        return
    try:
        # Rules on changes see the parent's travelling tensors, as the aggregator's did.
        weights = aggregate(record.rule.name, updates, base=travelling, **record.rule.params)
        rederived = serialize_tensors(with_frozen(weights, parent_tensors, spec))
    except Exception as exc:  # the params are whatever the metadata says: any refusal is a finding
        audit.find(
            FindingKind.AGGREGATION_FAILED,
            record.rule.name,
            "rule",
            f"{record.rule.name} with params {dict(record.rule.params)} refused the recorded updates: {exc}",
        )
        return
    audit.rederived_hash = sha256_hex(rederived)
    frozen = [t.name for t in spec.tensors if not t.trainable]
    how = f"re-running {record.rule.name} {dict(record.rule.params)} over {len(updates)} updates"
    audit.compare_rederived(how + (", frozen tensors from the parent" if frozen else ""))
