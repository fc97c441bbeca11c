"""Re-checking a round's privacy decisions: every claim, every recorded ε, every privacy rejection.

The auditor reads each node's earlier updates from the chain's events and the store, exactly as
the aggregator did (`ledger.privacy.history`), and judges each claim with the same accountant
(`ledger.privacy.judge`): an included update must have its claim accepted, a rejection for a
privacy reason must be reproduced, and the ε the metadata records per node must be the claims'.
(Rejections for the wrong encoding are re-checked with every other content reason, by
`ledger.audit.decisions`.)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ledger.audit.checks import Judgement
from ledger.audit.facts import ChainFacts
from ledger.audit.verdict import FindingKind
from ledger.core.encoding import DecodeError, read_update_metadata
from ledger.core.metadata import RoundRecord
from ledger.core.policy import FederationPolicy
from ledger.core.reasons import RejectReason
from ledger.privacy.history import earlier_entries
from ledger.privacy.judge import judge_claim

_PRIVACY_REASONS = {RejectReason.PRIVACY_CLAIM_INVALID, RejectReason.PRIVACY_BUDGET_EXHAUSTED}


def check_privacy(
    audit: Judgement,
    record: RoundRecord,
    facts: ChainFacts,
    policy: FederationPolicy,
    included_claims: Mapping[str, Mapping[str, Any] | None],
) -> None:
    """Findings for every privacy or encoding decision of the round that the auditor cannot reproduce.

    `included_claims` are the claims of the included updates (by hash), as decoded from their blobs.
    """
    meta = audit.metadata_subject
    dp = policy.privacy
    if dp is None:
        if record.privacy is not None:
            audit.find(
                FindingKind.PRIVACY_MISMATCH, meta, "metadata",
                "the federation pins no privacy policy, yet the metadata records ε per node",
                expected=None, actual=dict(record.privacy),
            )  # fmt: skip
        return
    # By node and hash: two nodes may submit byte-identical updates (each with its own budget).
    submitted = {(event.node.lower(), event.update_hash): event for event in facts.submissions}
    earlier = earlier_entries(
        facts.earlier_submissions, audit.store, dp, before_round=facts.version.round, nodes={e.node for e in facts.submissions}
    )
    verified: dict[str, str] = {}
    for item in record.included:
        event = submitted.get((item.node.lower(), item.update_hash))
        if event is None or item.update_hash not in included_claims:
            continue  # not submitted, or its blob is unusable: already a finding
        verdict = judge_claim(dp, included_claims[item.update_hash], num_samples=event.num_samples, earlier=earlier[event.node])
        if not verdict.accepted:
            audit.find(
                FindingKind.PRIVACY_MISMATCH, item.update_hash, "update",
                f"included, yet its privacy claim is refused: {verdict.detail}",
                expected="an accepted claim", actual=verdict.reason.name.lower() if verdict.reason else None,
            )  # fmt: skip
        if verdict.epsilon is not None:
            verified[event.node] = verdict.epsilon
    for rejection in facts.rejections:
        if rejection.reason_code not in _PRIVACY_REASONS:
            continue
        event = submitted.get((rejection.node.lower(), rejection.update_hash))
        blob = audit.fetch(rejection.update_hash, "update")
        if event is None or blob is None:
            continue
        try:
            _, claim = read_update_metadata(blob)
        except DecodeError as exc:
            audit.find(
                FindingKind.PRIVACY_MISMATCH, rejection.update_hash, "update",
                f"rejected for reason {rejection.reason_code}, but its metadata is unreadable: {exc.detail}",
                expected=rejection.reason_code, actual=int(exc.reason),
            )  # fmt: skip
            continue
        verdict = judge_claim(dp, claim, num_samples=event.num_samples, earlier=earlier[event.node])
        if verdict.reason is None or int(verdict.reason) != rejection.reason_code:
            audit.find(
                FindingKind.PRIVACY_MISMATCH, rejection.update_hash, "update",
                f"rejected for reason {rejection.reason_code}, but the accountant judges the claim: {verdict.detail}",
                expected=rejection.reason_code, actual=None if verdict.reason is None else int(verdict.reason),
            )  # fmt: skip
        if verdict.epsilon is not None:
            verified[event.node] = verdict.epsilon
    recorded = dict(record.privacy or {})
    if record.privacy is None or {k.lower(): v for k, v in recorded.items()} != {k.lower(): v for k, v in verified.items()}:
        audit.find(
            FindingKind.PRIVACY_MISMATCH, meta, "metadata",
            "the ε the metadata records per node is not the ε the nodes' verified claims state",
            expected=verified, actual=None if record.privacy is None else recorded,
        )  # fmt: skip
