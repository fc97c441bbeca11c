"""The decision on one update's privacy claim, and what each earlier update of its node spent.

The aggregator and the auditor both call `judge_claim`, with the node's earlier updates read from
the chain and the store (`ledger.privacy.history`), so they reach the same decision. Every update
a node published counts, rejected ones too: its bytes are public in the store whatever the
aggregator made of them. Pure: a claim, the policy and the node's history in, a verdict out.

A claim is accepted when
1. it follows the pinned policy: the accountant, σ, clipping norm and δ are the pinned ones, the
   sample rate is 1/ceil(n/batch_size) and the steps `PrivacyPolicy.steps(n)` for the n the node
   submitted on chain;
2. every earlier update of the node carries a claim that follows the policy (else its spend is
   unknown, and so is the node's ε);
3. its ε is what the accountant gives for the earlier spends plus this one: recomputed − 1e-9 ≤
   claimed ≤ recomputed + 1e-6 + 1e-9 (1e-6 is the rounding up to 6 places; 1e-9 absorbs the last-bit
   differences between numpy/scipy builds, far below any honest claim's distance from the edge);
4. and that ε is within the budget (compared as decimal text, exactly).
Failing 1–3 is `PRIVACY_CLAIM_INVALID`; failing 4 is `PRIVACY_BUDGET_EXHAUSTED`, and its ε is still
recorded, since the accountant verified it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from ledger.core.policy import EPSILON_DECIMALS, PrivacyPolicy, epsilon_text
from ledger.core.reasons import RejectReason
from ledger.privacy.accountant import Spend, cumulative_epsilon
from ledger.privacy.claims import ClaimError, PrivacyClaim

ROUNDING_SLACK = Decimal(1).scaleb(-EPSILON_DECIMALS)
PLATFORM_SLACK = Decimal("1e-9")


@dataclass(frozen=True)
class Unaccountable:
    """An earlier update whose privacy spend cannot be known (no blob, no claim, a claim off policy)."""

    update_hash: str
    round: int
    why: str
    transient: bool = False  # the store could not serve the blob: reading it again may succeed


Entry = Spend | Unaccountable


@dataclass(frozen=True)
class ClaimVerdict:
    """`reason` None: accepted. `epsilon` is the node's cumulative ε when the accountant verified it."""

    reason: RejectReason | None
    detail: str
    epsilon: str | None = None

    @property
    def accepted(self) -> bool:
        return self.reason is None


def spend_of(document: Mapping[str, Any] | None, policy: PrivacyPolicy, *, num_samples: int) -> Spend:
    """What an update spent, from its claim; `ClaimError` if it has none or the claim is off policy."""
    if document is None:
        raise ClaimError("the update carries no privacy claim")
    claim = PrivacyClaim.from_json(document)
    pinned = {
        "accountant": policy.accountant,
        "noise_multiplier": policy.noise_multiplier,
        "max_grad_norm": policy.max_grad_norm,
        "delta": policy.delta,
        "sample_rate": policy.sample_rate(num_samples),
        "steps": policy.steps(num_samples),
    }
    for name, value in pinned.items():
        if getattr(claim, name) != value:
            raise ClaimError(f"the claim's {name} is {getattr(claim, name)!r}; the policy gives {value!r} for {num_samples} samples")
    return Spend(claim.noise_multiplier, claim.sample_rate, claim.steps)


def judge_claim(
    policy: PrivacyPolicy, document: Mapping[str, Any] | None, *, num_samples: int, earlier: Sequence[Entry]
) -> ClaimVerdict:
    """Accept or refuse one update's claim, given its node's earlier updates in round order."""
    invalid = RejectReason.PRIVACY_CLAIM_INVALID
    try:
        spend = spend_of(document, policy, num_samples=num_samples)
    except ClaimError as exc:
        return ClaimVerdict(invalid, str(exc))
    assert document is not None
    for entry in earlier:
        if isinstance(entry, Unaccountable):
            return ClaimVerdict(
                invalid, f"the node's update {entry.update_hash} in round {entry.round} cannot be accounted for: {entry.why}"
            )
    spends = [entry for entry in earlier if isinstance(entry, Spend)] + [spend]
    recomputed = Decimal(cumulative_epsilon(spends, delta=policy.delta, orders=policy.orders))
    claimed = Decimal(document["epsilon"])
    if not recomputed - PLATFORM_SLACK <= claimed <= recomputed + ROUNDING_SLACK + PLATFORM_SLACK:
        expected = epsilon_text(recomputed) if recomputed.is_finite() else "infinity"
        return ClaimVerdict(
            invalid, f"the claim says ε {document['epsilon']}; the accountant gives {expected} from the node's claims"
        )
    if over_budget(policy, document["epsilon"]):
        return ClaimVerdict(
            RejectReason.PRIVACY_BUDGET_EXHAUSTED,
            f"ε {document['epsilon']} exceeds the per-node budget {policy.epsilon_budget}",
            document["epsilon"],
        )
    return ClaimVerdict(None, "ok", document["epsilon"])


def over_budget(policy: PrivacyPolicy, epsilon: str) -> bool:
    """The budget rule, compared as decimal text, exactly: the node applies it to its next claim
    (then publishes nothing), the aggregator to every claim it judges and to whom it waits for."""
    return Decimal(epsilon) > Decimal(policy.epsilon_budget)


def next_claim(policy: PrivacyPolicy, *, num_samples: int, earlier: Sequence[Spend]) -> PrivacyClaim:
    """The claim a node following `policy` makes for its next update (node side)."""
    spend = Spend(policy.noise_multiplier, policy.sample_rate(num_samples), policy.steps(num_samples))
    epsilon = cumulative_epsilon([*earlier, spend], delta=policy.delta, orders=policy.orders)
    return PrivacyClaim(
        accountant=policy.accountant,
        noise_multiplier=spend.noise_multiplier,
        max_grad_norm=policy.max_grad_norm,
        sample_rate=spend.sample_rate,
        steps=spend.steps,
        delta=policy.delta,
        epsilon=epsilon_text(epsilon),
    )
