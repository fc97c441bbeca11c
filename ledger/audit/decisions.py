"""Re-checks the aggregator's decisions against what was pinned: the policy, and the lineage.

The federation's policy (rule, parameters, size limit, norm bound) is pinned in the genesis
metadata, whose SHA-256 the chain holds, and changes only through the chain's `PolicyChanged`
event (a blob pinned by the admin, in force from a given round). Each round version is judged
against the policy in force for its round, never against a default assumed later:
- the rule and its parameters are the pinned ones, the sample-count cap included
  (`FederationPolicy.rule_call_params`: an update weighted above the cap is a finding);
- every included update passes the pinned validation: the aggregator's own pure checks
  (`ledger.core.validation`), re-run here on the re-hashed bytes against the parent model, and is
  the first submission of its bytes in chain order (`ledger.chain.rounds.copies_of_earlier`);
- every on-chain rejection's reason holds (`recheck_rejections` says which reasons can be re-checked);
- the round built on the latest version it could build on; anything else forks the lineage.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ledger.audit.checks import Judgement, chain_samples
from ledger.audit.facts import ChainFacts, could_open_on
from ledger.audit.verdict import Finding, FindingKind, RejectionCheck, RejectionStatus
from ledger.chain import events
from ledger.chain.rounds import copies_of_earlier
from ledger.core.aggregation import Update
from ledger.core.metadata import GenesisRecord, MetadataError, RoundRecord, decode_policy
from ledger.core.policy import FederationPolicy
from ledger.core.reasons import RejectReason
from ledger.core.validation import Accepted, validate_blob

# Reasons that are a pure function of the bytes (fixed by their hash), the base and the pinned
# policy: anyone holding the bytes re-runs the validation and gets the same answer.
CONTENT_REASONS = frozenset(
    {
        RejectReason.TOO_LARGE,
        RejectReason.MALFORMED,
        RejectReason.NAME_MISMATCH,
        RejectReason.SHAPE_MISMATCH,
        RejectReason.DTYPE_MISMATCH,
        RejectReason.NON_FINITE,
        RejectReason.NORM_TOO_LARGE,
        RejectReason.ENCODING_MISMATCH,
        RejectReason.NO_CHANGE,
    }
)
# Reasons the chain alone decides: which node submitted the same hash first (block, log index).
ORDER_REASONS = frozenset({RejectReason.DUPLICATE_UPDATE})
# Reasons that say what the aggregator's fetch returned at that moment. Bytes found later cannot
# refute them (a node may upload its blob after being rejected, or one store may hold an altered
# copy while another holds the original), and failing to find them cannot confirm them either:
# an auditor only reports whether its own fetch agrees.
AVAILABILITY_REASONS = frozenset({RejectReason.HASH_MISMATCH, RejectReason.MISSING_BLOB})
# Reasons about a node's privacy claim and budget: `ledger.audit.privacy` re-checks them with the
# accountant over the node's earlier claims.
PRIVACY_REASONS = frozenset({RejectReason.PRIVACY_CLAIM_INVALID, RejectReason.PRIVACY_BUDGET_EXHAUSTED})
# Validation outcomes of an update that is one but may not be included: over the pinned limits,
# or no change from the parent at all (a free-rider's).
_INADMISSIBLE_REASONS = frozenset(
    {RejectReason.NON_FINITE, RejectReason.NORM_TOO_LARGE, RejectReason.TOO_LARGE, RejectReason.NO_CHANGE}
)
_DECODE_FINDINGS = {
    RejectReason.ENCODING_MISMATCH: FindingKind.ENCODING_MISMATCH,
    RejectReason.NAME_MISMATCH: FindingKind.SHAPE_MISMATCH,
    RejectReason.SHAPE_MISMATCH: FindingKind.SHAPE_MISMATCH,
}


def check_pinned_recipe(audit: Judgement, record: RoundRecord, policy: FederationPolicy) -> None:
    """The version names the rule and parameters of the policy in force for its round."""
    claimed_params, pinned_params = dict(record.rule.params), policy.rule_call_params()
    claimed = {"name": record.rule.name, "params": claimed_params}
    pinned = {"name": policy.rule, "params": pinned_params}
    if claimed != pinned:
        cap = pinned_params.get("max_samples")
        uncapped = cap is not None and claimed_params.get("max_samples") != cap
        why = f" (updates weighted by up to {cap} samples each, the pinned max_num_samples)" if uncapped else ""
        audit.find(
            FindingKind.RULE_NOT_PINNED,
            record.rule.name,
            "rule",
            f"version {audit.version.version} was built with {claimed['name']} {claimed['params']}, "
            f"but the federation pinned {pinned['name']} {pinned['params']} for it{why}",
            expected=pinned,
            actual=claimed,
        )


def check_parent_is_latest(audit: Judgement, facts: ChainFacts) -> None:
    """The round built on the latest version it could build on when it opened.

    Rounds open one at a time, so every earlier version was committed by then; without a quorum
    gate the latest is version v - 1. With one, versions the gate refused (too few ok attestations,
    or an unresolved failing one) are skipped: building past a version auditors failed is recovery,
    not a fork.
    """
    version = audit.version
    parent = facts.committed.get(version.parent_hash or "")
    if parent is None or parent.version >= version.version:
        return  # not an earlier version at all: `parent_missing`
    opened = facts.opened.ref.block_number if facts.opened is not None else version.ref.block_number
    earlier = sorted((e for e in facts.committed.values() if e.version < version.version), key=lambda e: -e.version)
    latest = next((e for e in earlier if could_open_on(facts, e.model_hash, opened)), None)
    if latest is None or latest.version == parent.version:
        return
    skipped = version.version - 1 - latest.version
    gate = f" ({skipped} later version(s) could not be built on)" if skipped else ""
    audit.find(
        FindingKind.FORKED_LINEAGE,
        version.model_hash,
        "parent",
        f"round {version.round} built on version {parent.version}, but version {latest.version} was the latest it "
        f"could build on when it opened{gate}: the lineage forks",
        expected=latest.model_hash,
        actual=parent.model_hash,
    )


def policy_in_force(audit: Judgement, facts: ChainFacts, genesis: GenesisRecord | None) -> FederationPolicy | None:
    """The policy the version's round ran under: the last `PolicyChanged` for it, else genesis's."""
    change = facts.policy_change
    if change is None:
        if genesis is None or facts.genesis is None:
            return None
        audit.policy = genesis.policy
        audit.policy_source = {"event": "genesis", "blob": facts.genesis.metadata_hash, "from_round": 0}
        return genesis.policy
    got = audit.get(change.policy_hash, "policy")
    problem = f"{got.kind.value}: {got.detail}" if isinstance(got, Finding) else None
    if not isinstance(got, Finding):
        try:
            policy = decode_policy(got)
        except MetadataError as exc:
            problem = str(exc)
        else:
            audit.policy = policy
            audit.policy_source = {
                "event": "PolicyChanged",
                "blob": change.policy_hash,
                "from_round": change.from_round,
                "block": change.ref.block_number,
            }
            return policy
    audit.policy = None
    audit.find(
        FindingKind.POLICY_UNAVAILABLE,
        change.policy_hash,
        "policy",
        f"the policy pinned by PolicyChanged (from round {change.from_round}, block {change.ref.block_number}) "
        f"cannot be read: {problem}",
    )
    return None


def validated_updates(
    audit: Judgement,
    record: RoundRecord,
    facts: ChainFacts,
    parent: Mapping[str, torch.Tensor] | None,
    policy: FederationPolicy | None,
) -> tuple[list[Update], dict[str, Mapping[str, Any] | None]]:
    """The included updates as the rule takes them, each decoded in the pinned encoding and
    re-validated under the pinned policy; and the privacy claim each carries, by update hash.

    Weights come from the re-hashed blobs, sample counts from the chain (the nodes' signed word).
    Without a parent or a policy nothing can be decoded (that gap is a finding already): the blobs
    are still fetched, so a missing one is named too.
    """
    samples = chain_samples(facts)
    updates: list[Update] = []
    claims: dict[str, Mapping[str, Any] | None] = {}
    for item in record.included:
        blob = audit.fetch(item.update_hash, "update")
        if blob is None or parent is None or policy is None:
            continue
        outcome = validate_blob(
            blob, parent, max_bytes=policy.max_update_bytes, max_norm=policy.max_norm, encoding=policy.encoding
        )
        if isinstance(outcome, Accepted):
            weight = samples.get((item.node.lower(), item.update_hash), item.num_samples)
            updates.append(Update(item.update_hash, weight, outcome.tensors))
            claims[item.update_hash] = outcome.privacy
            continue
        reason = outcome.reason
        # Over the pinned limits, or no change: the inclusion was invalid. Not an update of this model in this
        # encoding at all: the kind of finding a malformed blob always was.
        kind = FindingKind.INCLUDED_INVALID if reason in _INADMISSIBLE_REASONS else _DECODE_FINDINGS.get(reason, FindingKind.BLOB_MALFORMED)
        audit.find(
            kind,
            item.update_hash,
            "update",
            f"the update of {item.node} is included, but the pinned validation (encoding {policy.encoding!r}) "
            f"rejects it: {reason.name.lower()} ({outcome.detail})",
            expected="accepted",
            actual=reason.name.lower(),
        )
    return updates, claims


def copied_submissions(facts: ChainFacts) -> dict[tuple[str, str], events.UpdateSubmitted]:
    """(node, update hash) of each submission of the round that copies an earlier one → that earlier one."""
    return {
        (facts.submissions[index].node.lower(), facts.submissions[index].update_hash): earlier
        for index, earlier in copies_of_earlier(facts.submissions).items()
    }


def check_included_originals(audit: Judgement, record: RoundRecord, facts: ChainFacts) -> None:
    """No included update copies a hash another node submitted earlier in the round: it counts once,
    for the first submitter."""
    copied = copied_submissions(facts)
    for item in record.included:
        earlier = copied.get((item.node.lower(), item.update_hash))
        if earlier is None:
            continue
        audit.find(
            FindingKind.INCLUDED_INVALID,
            item.update_hash,
            "update",
            f"the update of {item.node} is included, but {earlier.node} submitted the same bytes first "
            f"(block {earlier.ref.block_number}): a duplicate_update, counted twice",
            expected="rejected (duplicate_update)",
            actual="included",
        )


def recheck_rejections(
    audit: Judgement,
    facts: ChainFacts,
    parent: Mapping[str, torch.Tensor] | None,
    policy: FederationPolicy | None,
) -> None:
    """Re-check every rejection the chain recorded for the round; one `RejectionCheck` each.

    Content reasons (`CONTENT_REASONS`) are re-run on the bytes, order reasons (`ORDER_REASONS`)
    on the chain's submissions: a different outcome is a `rejection_unfounded`, and bytes nobody can produce a `rejection_unverifiable` (the aggregator
    held them when it decided). Availability reasons (`AVAILABILITY_REASONS`) cannot be decided
    from bytes; the check says whether this auditor's own fetch fails the same way.
    """
    copied = copied_submissions(facts)
    for event in facts.rejections:
        try:
            reason: RejectReason | None = RejectReason(event.reason_code)
        except ValueError:
            reason = None
        name = reason.name.lower() if reason is not None else "unknown"

        def record(status: RejectionStatus, detail: str) -> None:
            audit.rejections.append(
                RejectionCheck(event.node, event.update_hash, event.reason_code, name, status, detail)
            )

        if reason is None:
            detail = f"reason code {event.reason_code} is not a reason fedledger defines, so it cannot hold"
            audit.find(FindingKind.REJECTION_UNFOUNDED, event.update_hash, "rejected update", detail, actual=event.reason_code)
            record(RejectionStatus.REFUTED, detail)
            continue
        if reason in PRIVACY_REASONS:
            continue  # re-checked with the accountant by `ledger.audit.privacy`
        if reason in ORDER_REASONS:
            earlier = copied.get((event.node.lower(), event.update_hash))
            if earlier is not None:
                record(RejectionStatus.CONFIRMED, f"{earlier.node} submitted the same hash first (block {earlier.ref.block_number})")
                continue
            detail = (
                f"the update of {event.node} was rejected for {name}, but no other node submitted its hash "
                f"earlier in round {facts.version.round}"
            )
            audit.find(
                FindingKind.REJECTION_UNFOUNDED, event.update_hash, "rejected update", detail, expected=name, actual="first submission"
            )
            record(RejectionStatus.REFUTED, detail)
            continue
        if reason not in CONTENT_REASONS and reason not in AVAILABILITY_REASONS:  # a reason newer than this audit
            detail = f"this build does not know how to re-check reason {name}"
            audit.find(FindingKind.REJECTION_UNVERIFIABLE, event.update_hash, "rejected update", detail, expected=name)
            record(RejectionStatus.UNVERIFIABLE, detail)
            continue
        got = audit.get(event.update_hash, "rejected update")
        if reason in AVAILABILITY_REASONS:
            if isinstance(got, Finding):
                record(RejectionStatus.CORROBORATED, f"this auditor's fetch fails too: {got.kind.value}")
            else:
                record(
                    RejectionStatus.UNVERIFIABLE,
                    "bytes that hash to the name are available now; the reason describes the aggregator's fetch "
                    "at the time, which later bytes can neither confirm nor refute",
                )
            continue
        if isinstance(got, Finding):
            detail = (
                f"the update of {event.node} was rejected for {name}, a property of its bytes, but no blob with "
                f"its hash can be re-checked ({got.kind.value})"
            )
            audit.find(FindingKind.REJECTION_UNVERIFIABLE, event.update_hash, "rejected update", detail, expected=name)
            record(RejectionStatus.UNVERIFIABLE, detail)
            continue
        if parent is None or policy is None:
            record(RejectionStatus.UNVERIFIABLE, "no parent model or no pinned policy to validate against (see findings)")
            continue
        outcome = validate_blob(
            got, parent, max_bytes=policy.max_update_bytes, max_norm=policy.max_norm, encoding=policy.encoding
        )
        if not isinstance(outcome, Accepted) and outcome.reason is reason:
            record(RejectionStatus.CONFIRMED, outcome.detail)
            continue
        found = "accepted" if isinstance(outcome, Accepted) else outcome.reason.name.lower()
        shown = f"accepted (L2 norm of the change {outcome.update_norm:.6g})" if isinstance(outcome, Accepted) else found
        detail = (
            f"the update of {event.node} was rejected for {name}, but re-validating its bytes under the pinned "
            f"policy gives {shown}"
        )
        audit.find(
            FindingKind.REJECTION_UNFOUNDED, event.update_hash, "rejected update", detail, expected=name, actual=found
        )
        record(RejectionStatus.REFUTED, detail)
