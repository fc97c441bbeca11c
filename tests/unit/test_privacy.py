"""The privacy policy and claims: Opacus's own ε, each way a claim is judged, the pinned JSON."""

from __future__ import annotations

from decimal import Decimal

import pytest

from ledger.core.metadata import FORMAT, IncludedUpdate, MetadataError, RoundRecord, decode, encode_genesis, encode_round
from ledger.core.policy import FederationPolicy, PolicyError, PrivacyPolicy, epsilon_text
from ledger.core.reasons import RejectReason
from ledger.core.safe_json import canonical_json
from ledger.core.task_spec import TaskSpec, TensorSpec
from ledger.privacy.accountant import Spend, calibrate_noise_multiplier, cumulative_epsilon
from ledger.privacy.claims import ClaimError, PrivacyClaim
from ledger.privacy.judge import Unaccountable, judge_claim, next_claim

POLICY = PrivacyPolicy(noise_multiplier=3.205, max_grad_norm=1.0, delta=1e-5, epsilon_budget="2.000000")
TASK = TaskSpec("mlp", "1", "ab" * 32, {}, (TensorSpec("weight", (2, 2), "float32", True),))
N = 288  # q = 1/ceil(288/64) = 0.2, 2 epochs of 5 steps
SPEND = Spend(3.205, 0.2, 10)


def test_epsilon_is_opacus_rdp_accountants_bit_for_bit() -> None:
    from opacus.accountants import RDPAccountant

    spends = [SPEND, SPEND, Spend(3.205, 1 / 3, 6)]
    accountant = RDPAccountant()
    accountant.history = [(s.noise_multiplier, s.sample_rate, s.steps) for s in spends]

    assert cumulative_epsilon(spends, delta=1e-5, orders=POLICY.orders) == accountant.get_epsilon(1e-5)
    assert cumulative_epsilon([], delta=1e-5, orders=POLICY.orders) == 0.0


def test_calibration_finds_the_smallest_sigma_for_the_target() -> None:
    sigma = calibrate_noise_multiplier(3.0, sample_rate=0.2, steps_per_round=10, rounds=10, delta=1e-5, orders=POLICY.orders)

    assert sigma == 3.205
    over = cumulative_epsilon([Spend(sigma - 0.0001, 0.2, 10)] * 10, delta=1e-5, orders=POLICY.orders)
    assert over > 3.0 >= cumulative_epsilon([Spend(sigma, 0.2, 10)] * 10, delta=1e-5, orders=POLICY.orders)


@pytest.mark.parametrize(("batches", "n"), [(5, 288), (93, 93 * 64), (1, 30)])
def test_steps_are_what_opacus_poisson_loader_runs(batches: int, n: int) -> None:
    import torch
    from opacus.data_loader import DPDataLoader
    from torch.utils.data import DataLoader, TensorDataset

    loader = DPDataLoader.from_data_loader(DataLoader(TensorDataset(torch.zeros(n, 1)), batch_size=64))

    assert POLICY.sample_rate(n) == loader.sample_rate == 1 / batches
    assert POLICY.steps(n) == POLICY.epochs * len(loader)


def test_epsilon_text_rounds_up_to_six_places() -> None:
    assert epsilon_text(2.9999340510120023) == "2.999935"
    assert epsilon_text(Decimal("3")) == "3.000000"
    assert epsilon_text("0.1234561") == "0.123457"
    with pytest.raises(PolicyError):
        epsilon_text(-1.0)


def _honest(earlier: list[Spend]) -> dict:
    return next_claim(POLICY, num_samples=N, earlier=earlier).to_json()


def test_an_honest_claim_is_accepted_with_its_epsilon() -> None:
    claim = _honest([SPEND])

    verdict = judge_claim(POLICY, claim, num_samples=N, earlier=[SPEND])

    assert verdict.accepted and verdict.epsilon == claim["epsilon"] == "1.322319"


@pytest.mark.parametrize(
    ("edit", "detail"),
    [
        ({"epsilon": "0.953006"}, "accountant gives 1.322319"),  # leaves out the node's earlier update
        ({"epsilon": "1.322317"}, "accountant gives"),  # understated by a hair
        ({"noise_multiplier": 6.41}, "noise_multiplier"),
        ({"sample_rate": 0.1}, "sample_rate"),
        ({"steps": 5}, "steps"),
        ({"delta": 1e-6}, "delta"),
        ({"accountant": "opacus-prv"}, "accountant"),
        ({"epsilon": 1.322319}, "decimal text"),
    ],
)
def test_a_claim_off_policy_or_understating_epsilon_is_invalid(edit: dict, detail: str) -> None:
    claim = {**_honest([SPEND]), **edit}

    verdict = judge_claim(POLICY, claim, num_samples=N, earlier=[SPEND])

    assert verdict.reason is RejectReason.PRIVACY_CLAIM_INVALID
    assert detail in verdict.detail
    assert verdict.epsilon is None


def test_a_missing_claim_and_an_unaccountable_earlier_update_are_invalid() -> None:
    lost = Unaccountable("ab" * 32, 1, "its blob cannot be read")

    missing = judge_claim(POLICY, None, num_samples=N, earlier=[])
    broken = judge_claim(POLICY, _honest([SPEND]), num_samples=N, earlier=[lost])

    assert missing.reason is RejectReason.PRIVACY_CLAIM_INVALID and "no privacy claim" in missing.detail
    assert broken.reason is RejectReason.PRIVACY_CLAIM_INVALID and "ab" * 32 in broken.detail


def test_over_budget_is_exhausted_and_its_verified_epsilon_is_kept() -> None:
    earlier = [SPEND] * 4
    claim = _honest(earlier)

    verdict = judge_claim(POLICY, claim, num_samples=N, earlier=earlier)

    assert Decimal(claim["epsilon"]) > Decimal(POLICY.epsilon_budget)
    assert verdict.reason is RejectReason.PRIVACY_BUDGET_EXHAUSTED
    assert verdict.epsilon == claim["epsilon"] == "2.088779"


def test_a_claim_has_exactly_its_fields() -> None:
    claim = _honest([])

    assert PrivacyClaim.from_json(claim).to_json() == claim
    with pytest.raises(ClaimError):
        PrivacyClaim.from_json({**claim, "note": "trust me"})
    with pytest.raises(ClaimError):
        PrivacyClaim.from_json({**claim, "steps": True})


def test_the_policy_round_trips_through_the_genesis_record() -> None:
    policy = FederationPolicy(rule="fedavg", encoding="int8", privacy=POLICY)

    record = decode(encode_genesis(seed=0, policy=policy, task=TASK))

    assert record.policy == policy
    assert record.policy.to_json()["privacy"]["orders"][:2] == [1.1, 1.2]


def test_a_genesis_policy_without_encoding_or_privacy_reads_as_f32_without_dp() -> None:
    document = {"format": FORMAT, "kind": "genesis", "seed": 0, "task": TASK.to_json(),
                "policy": {"rule": {"name": "fedavg", "params": {}}, "limits": {"max_update_bytes": 10, "max_norm": 1.0}}}  # fmt: skip

    policy = decode(canonical_json(document)).policy

    assert (policy.encoding, policy.privacy) == ("f32", None)


@pytest.mark.parametrize(
    "edit",
    [{"delta": 1.5}, {"noise_multiplier": 0}, {"epsilon_budget": "3"}, {"batch_size": 0}, {"orders": [1.0]}, {"epochs": True}],
)
def test_an_ill_formed_privacy_policy_names_its_field(edit: dict) -> None:
    document = {**POLICY.to_json(), **edit}

    with pytest.raises(PolicyError, match=f"privacy.{next(iter(edit))}"):
        PrivacyPolicy.from_json(document)


@pytest.mark.parametrize("privacy", [{"0xNode": "1.322319"}, None])
def test_round_records_carry_each_nodes_epsilon(privacy: dict | None) -> None:
    blob = encode_round(
        round_number=1, base_model_hash="ab" * 32, task_spec=TASK.spec_hash, rule="fedavg", rule_params={},
        included=[IncludedUpdate("cd" * 32, "0xNode", 288)], rejected=[], metrics={}, privacy=privacy,
    )  # fmt: skip

    record = decode(blob)

    assert isinstance(record, RoundRecord) and record.privacy == privacy
    assert (b'"privacy"' in blob) is (privacy is not None)
    with pytest.raises(MetadataError, match="privacy"):
        decode(blob.replace(b'"1.322319"', b'"1.3"') if privacy else blob.replace(b'"rejected"', b'"privacy":[1],"rejected"'))
