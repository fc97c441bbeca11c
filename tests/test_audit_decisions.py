"""The re-derivation re-checks the aggregator's decisions against the policy pinned at genesis.

Crafted ledgers (`crafted.CraftedLedger`) play aggregators that lie one way each; the pinned norm
bound is 1.0, honest updates move the model by 0.3, an oversized one by 5. The last test runs the
real aggregator on the in-process chain with two nodes submitting byte-identical updates (the
later copy is rejected as a duplicate, and the auditor confirms it).
"""

from __future__ import annotations

import pytest
from crafted import NODES, CraftedLedger, Submitted, moved
from support import DictStore

from ledger.audit.rederive import rederive, verify_version
from ledger.audit.verdict import FindingKind, RejectionStatus, Verdict
from ledger.core.hashing import sha256_hex
from ledger.core.metadata import IncludedUpdate
from ledger.core.policy import FederationPolicy
from ledger.core.reasons import RejectReason

MAX_BYTES = 1 << 20


@pytest.fixture
def ledger() -> CraftedLedger:
    return CraftedLedger()


def _honest(ledger: CraftedLedger, count: int = 4, *, oversized: int | None = None) -> list[Submitted]:
    base = ledger.tensors(ledger.latest)
    return [
        Submitted(NODES[i], moved(base, seed=len(ledger.versions) * 10 + i, norm=5.0 if i == oversized else 0.3), 100 + i)
        for i in range(count)
    ]


def _judge(ledger: CraftedLedger, model_hash: str) -> Verdict:
    return rederive(ledger.facts(model_hash), ledger.store, max_bytes=MAX_BYTES)


def _kinds(verdict: Verdict) -> list[FindingKind]:
    return [finding.kind for finding in verdict.findings]


def _only(verdict: Verdict, kind: FindingKind):
    assert _kinds(verdict) == [kind], verdict.to_json()
    return verdict.findings[0]


# --------------------------------------------------------------------------- honest decisions


def test_an_honest_round_with_a_confirmed_rejection_verifies(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger, oversized=2), rejected={2: RejectReason.NORM_TOO_LARGE})

    verdict = _judge(ledger, model)

    assert verdict.ok, verdict.to_json()
    assert verdict.policy == {
        "rule": {"name": "fedavg", "params": {}},
        "limits": {"max_update_bytes": 64 << 20, "max_norm": 1.0, "max_num_samples": 10_000},
        "encoding": "f32",
        "privacy": None,
    }
    [check] = verdict.rejections
    assert (check.node, check.reason, check.status) == (NODES[2], "norm_too_large", RejectionStatus.CONFIRMED)
    assert "bound is 1" in check.detail


def test_genesis_carries_its_policy(ledger: CraftedLedger) -> None:
    verdict = _judge(ledger, ledger.latest)

    assert verdict.ok and verdict.policy is not None and verdict.policy["limits"]["max_norm"] == 1.0


# --------------------------------------------------------------------------- every submission accounted for


def test_a_censored_submission_is_named(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger)
    model = ledger.round(submitted, left_out=[1])

    finding = _only(_judge(ledger, model), FindingKind.CENSORED_SUBMISSION)

    assert finding.subject == sha256_hex(submitted[1].blob)
    assert NODES[1] in finding.detail


def test_one_submission_listed_twice_is_named(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    twice = IncludedUpdate(sha256_hex(submitted[0].blob), NODES[0], submitted[0].num_samples)
    model = ledger.round(submitted, extra_included=[twice])

    finding = _only(_judge(ledger, model), FindingKind.INCLUDED_TWICE)

    assert (finding.subject, finding.actual) == (twice.update_hash, 2)


def test_a_copy_of_an_earlier_submission_rejected_as_a_duplicate_is_confirmed_from_the_chain(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], submitted[0].blob, 250))  # same bytes, another node, submitted later
    model = ledger.round(submitted, rejected={3: RejectReason.DUPLICATE_UPDATE})

    verdict = _judge(ledger, model)

    assert verdict.ok, verdict.to_json()
    [check] = verdict.rejections
    assert (check.node, check.reason, check.status) == (NODES[3], "duplicate_update", RejectionStatus.CONFIRMED)
    assert NODES[0] in check.detail


def test_including_a_copy_of_an_earlier_submission_is_named(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], submitted[0].blob, 250))
    model = ledger.round(submitted)  # the copy is merged too: the same bytes count twice

    finding = _only(_judge(ledger, model), FindingKind.INCLUDED_INVALID)

    assert finding.subject == sha256_hex(submitted[0].blob)
    assert "duplicate_update" in finding.detail and NODES[0] in finding.detail and NODES[3] in finding.detail


def test_rejecting_the_first_submitter_as_the_duplicate_is_unfounded(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], submitted[0].blob, 250))
    model = ledger.round(submitted, rejected={0: RejectReason.DUPLICATE_UPDATE})  # the original, not the copy

    verdict = _judge(ledger, model)

    # The original's rejection does not hold, and the copy it kept is still a copy.
    assert set(_kinds(verdict)) == {FindingKind.REJECTION_UNFOUNDED, FindingKind.INCLUDED_INVALID}
    assert verdict.rejections[0].status is RejectionStatus.REFUTED


def test_crediting_a_duplicate_to_the_wrong_node_is_still_caught(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], submitted[0].blob, 250))
    stranger = IncludedUpdate(sha256_hex(submitted[0].blob), NODES[5], 100)
    model = ledger.round(submitted, rejected={3: RejectReason.DUPLICATE_UPDATE}, left_out=[0], extra_included=[stranger])

    verdict = _judge(ledger, model)

    assert set(_kinds(verdict)) == {FindingKind.SUBMISSION_MISMATCH, FindingKind.CENSORED_SUBMISSION}
    [mismatch] = [f for f in verdict.findings if f.kind is FindingKind.SUBMISSION_MISMATCH]
    assert mismatch.expected == [NODES[0], NODES[3]] and mismatch.actual == NODES[5]


def test_a_free_rider_rejected_for_no_change_is_confirmed_and_including_one_is_named(ledger: CraftedLedger) -> None:
    from ledger.core.serialization import serialize_tensors

    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], serialize_tensors(ledger.tensors(ledger.latest)), 100))  # the base, returned
    rejected = ledger.round(submitted, rejected={3: RejectReason.NO_CHANGE})
    verdict = _judge(ledger, rejected)
    assert verdict.ok, verdict.to_json()
    assert verdict.rejections[0].status is RejectionStatus.CONFIRMED

    submitted = _honest(ledger, 3)
    submitted.append(Submitted(NODES[3], serialize_tensors(ledger.tensors(ledger.latest)), 100))
    included = ledger.round(submitted)
    finding = _only(_judge(ledger, included), FindingKind.INCLUDED_INVALID)
    assert finding.actual == "no_change"

    moving = ledger.round(_honest(ledger, 3), rejected={1: RejectReason.NO_CHANGE})
    finding = _only(_judge(ledger, moving), FindingKind.REJECTION_UNFOUNDED)
    assert (finding.expected, finding.actual) == ("no_change", "accepted")


def test_a_round_weighting_updates_above_the_pinned_sample_cap_is_named(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, 3)
    submitted[0] = Submitted(NODES[0], submitted[0].blob, 1_000_000)  # a node's unverifiable claim
    capped = ledger.round(submitted)  # honest: weighted by at most max_num_samples
    assert _judge(ledger, capped).ok

    submitted = _honest(ledger, 3)
    submitted[0] = Submitted(NODES[0], submitted[0].blob, 1_000_000)
    uncapped = ledger.round(submitted, params={})  # the claim weighs in full
    finding = _only(_judge(ledger, uncapped), FindingKind.RULE_NOT_PINNED)
    assert finding.expected == {"name": "fedavg", "params": {"max_samples": 10_000}}
    assert "max_num_samples" in finding.detail


# --------------------------------------------------------------------------- inclusions re-validated


def test_an_included_update_over_the_pinned_norm_bound_is_named(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, oversized=3)
    model = ledger.round(submitted)  # merged although it moves the model by 5, bound 1

    finding = _only(_judge(ledger, model), FindingKind.INCLUDED_INVALID)

    assert (finding.subject, finding.actual) == (sha256_hex(submitted[3].blob), "norm_too_large")
    assert "bound is 1" in finding.detail


# --------------------------------------------------------------------------- rejections re-checked


@pytest.mark.parametrize(("claimed", "found"), [(RejectReason.NORM_TOO_LARGE, "accepted"), (RejectReason.NON_FINITE, "accepted")])
def test_an_honest_update_rejected_with_a_false_reason(ledger: CraftedLedger, claimed: RejectReason, found: str) -> None:
    model = ledger.round(_honest(ledger), rejected={0: claimed})

    verdict = _judge(ledger, model)

    finding = _only(verdict, FindingKind.REJECTION_UNFOUNDED)
    assert (finding.subject, finding.expected, finding.actual) == (verdict.rejections[0].update_hash, claimed.name.lower(), found)
    assert verdict.rejections[0].status is RejectionStatus.REFUTED


def test_a_rejection_for_the_wrong_content_reason_is_refuted(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger, oversized=1), rejected={1: RejectReason.NON_FINITE})

    finding = _only(_judge(ledger, model), FindingKind.REJECTION_UNFOUNDED)

    assert (finding.expected, finding.actual) == ("non_finite", "norm_too_large")


def test_an_unknown_reason_code_cannot_hold(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger), rejected={0: 77})  # type: ignore[dict-item]

    finding = _only(_judge(ledger, model), FindingKind.REJECTION_UNFOUNDED)

    assert finding.actual == 77


def test_availability_reasons_are_corroborated_or_left_open_never_refuted(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger)
    model = ledger.round(submitted, rejected={0: RejectReason.HASH_MISMATCH, 1: RejectReason.MISSING_BLOB})
    del ledger.store.blobs[sha256_hex(submitted[1].blob)]  # nobody has node 1's bytes

    verdict = _judge(ledger, model)

    assert verdict.ok, verdict.to_json()
    statuses = {check.reason: check.status for check in verdict.rejections}
    assert statuses == {"hash_mismatch": RejectionStatus.UNVERIFIABLE, "missing_blob": RejectionStatus.CORROBORATED}


def test_a_content_reason_whose_bytes_are_gone_is_unverifiable(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger, oversized=0)
    model = ledger.round(submitted, rejected={0: RejectReason.NORM_TOO_LARGE})
    del ledger.store.blobs[sha256_hex(submitted[0].blob)]

    finding = _only(_judge(ledger, model), FindingKind.REJECTION_UNVERIFIABLE)

    assert finding.expected == "norm_too_large"


# --------------------------------------------------------------------------- rule, policy, lineage


def test_a_switched_rule_is_named_even_when_the_model_is_its_honest_output(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger, 5), rule="krum", params={"num_byzantine": 0})

    verdict = _judge(ledger, model)

    finding = _only(verdict, FindingKind.RULE_NOT_PINNED)
    assert finding.expected == {"name": "fedavg", "params": {"max_samples": 10_000}}
    assert finding.actual == {"name": "krum", "params": {"num_byzantine": 0}}
    assert verdict.rederived_hash == model  # the rule it names does give this model


def test_switched_parameters_are_named(ledger: CraftedLedger) -> None:
    pinned = CraftedLedger(policy=ledger.policy.__class__(rule="trimmed_mean", rule_params={"trim_ratio": 0.2}, max_norm=1.0))
    model = pinned.round(_honest(pinned, 5), rule="trimmed_mean", params={"trim_ratio": 0.4})

    finding = _only(_judge(pinned, model), FindingKind.RULE_NOT_PINNED)

    assert finding.expected["params"] == {"trim_ratio": 0.2}


def test_the_policy_must_be_readable(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger))
    genesis_metadata = ledger.versions[0].metadata_hash
    store = DictStore({k: v for k, v in ledger.store.blobs.items() if k != genesis_metadata})

    verdict = rederive(ledger.facts(model), store, max_bytes=MAX_BYTES)

    # The genesis metadata pins the policy and the task: without it nothing decodes, nothing re-runs.
    assert [(f.kind, f.subject, f.role) for f in verdict.findings] == [
        (FindingKind.MISSING_BLOB, genesis_metadata, "genesis metadata")
    ]
    assert verdict.rederived_hash is None and verdict.policy is None


def test_a_round_built_on_an_older_version_forks_the_lineage(ledger: CraftedLedger) -> None:
    genesis = ledger.latest
    first = ledger.round(_honest(ledger))
    fork = ledger.round(_honest(ledger), base=genesis)

    finding = _only(_judge(ledger, fork), FindingKind.FORKED_LINEAGE)

    assert (finding.expected, finding.actual) == (first, genesis)


def test_past_versions_the_quorum_refused_a_round_may_build_on_the_last_good_one(ledger: CraftedLedger) -> None:
    ledger.attestation_quorum = 1
    ledger.set_auditor(NODES[5])
    ledger.attest(ledger.latest, NODES[5], ok=True)
    good = ledger.round(_honest(ledger))
    ledger.attest(good, NODES[5], ok=True)
    failed = ledger.round(_honest(ledger))
    ledger.attest(failed, NODES[5], ok=False)

    recovery = ledger.round(_honest(ledger), base=good)  # skips the version auditors failed
    ledger.attest(recovery, NODES[5], ok=True)
    fork = ledger.round(_honest(ledger), base=good)  # skips a version it could have built on

    assert _judge(ledger, recovery).ok
    finding = _only(_judge(ledger, fork), FindingKind.FORKED_LINEAGE)
    assert (finding.expected, finding.actual) == (recovery, good)


def test_a_policy_change_on_chain_applies_from_its_round(ledger: CraftedLedger) -> None:
    before = ledger.round(_honest(ledger, 5))
    policy_hash = ledger.change_policy(FederationPolicy(rule="trimmed_mean", rule_params={"trim_ratio": 0.2}, max_norm=1.0))
    after = ledger.round(_honest(ledger, 5), rule="trimmed_mean", params={"trim_ratio": 0.2})
    silent = ledger.round(_honest(ledger, 5))  # back to fedavg with no PolicyChanged: not allowed

    assert _judge(ledger, before).ok
    verdict = _judge(ledger, after)
    assert verdict.ok, verdict.to_json()
    assert verdict.policy_source == {"event": "PolicyChanged", "blob": policy_hash, "from_round": 2, "block": verdict.policy_source["block"]}
    finding = _only(_judge(ledger, silent), FindingKind.RULE_NOT_PINNED)
    assert finding.expected == {"name": "trimmed_mean", "params": {"trim_ratio": 0.2}}


def test_a_policy_change_whose_blob_is_gone_leaves_the_decisions_unchecked(ledger: CraftedLedger) -> None:
    policy_hash = ledger.change_policy(FederationPolicy(rule="fedavg", max_norm=2.0))
    model = ledger.round(_honest(ledger))
    del ledger.store.blobs[policy_hash]

    finding = _only(_judge(ledger, model), FindingKind.POLICY_UNAVAILABLE)

    assert finding.subject == policy_hash


def test_a_model_that_is_not_the_rules_output(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger), model_edit=1e-3)

    finding = _only(_judge(ledger, model), FindingKind.REDERIVED_MISMATCH)

    assert finding.expected == model


def test_a_count_that_does_not_match_the_root(ledger: CraftedLedger) -> None:
    model = ledger.round(_honest(ledger), count_delta=1)

    assert _kinds(_judge(ledger, model)) == [FindingKind.COUNT_MISMATCH]


def test_a_rejected_update_in_the_root(ledger: CraftedLedger) -> None:
    submitted = _honest(ledger)
    rejected = IncludedUpdate(sha256_hex(submitted[0].blob), NODES[0], submitted[0].num_samples)
    model = ledger.round(submitted, rejected={0: RejectReason.NORM_TOO_LARGE}, extra_included=[rejected])

    verdict = _judge(ledger, model)

    assert set(_kinds(verdict)) == {FindingKind.REJECTED_INCLUDED, FindingKind.REJECTION_UNFOUNDED}


# --------------------------------------------------------------------------- the real aggregator, identical bytes


def test_the_aggregator_and_the_auditor_agree_on_byte_identical_updates(tmp_path) -> None:
    from aggregator.coordinator import Aggregator, AggregatorConfig
    from ledger.chain.client import LedgerClient
    from ledger.chain.inprocess import start_in_process_ledger
    from ledger.tasks.digits import DIGITS_MLP
    from ledger.store.local import LocalBlobStore

    chain = start_in_process_ledger(3)
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=MAX_BYTES)
    aggregator = Aggregator(chain.admin, store, DIGITS_MLP.bundled_data().test, AggregatorConfig())
    genesis = aggregator.ensure_genesis()
    round_number = aggregator.open_round().round
    base = store.get(genesis)
    from ledger.core.serialization import deserialize_tensors

    tensors = deserialize_tensors(base, max_bytes=MAX_BYTES)
    shared = store.put(moved(tensors, seed=1, norm=0.5))
    own = store.put(moved(tensors, seed=2, norm=0.5))
    for node, update, samples in zip(chain.nodes, [shared, shared, own], [100, 300, 200]):
        node.submit_update(round_number, update, samples)

    result = aggregator.close_round(round_number)

    # The later copy is rejected as a duplicate; the auditor confirms that from the chain's order.
    assert result.model_hash is not None and len(result.included) == 2
    [(copy, reason, _)] = result.rejected
    assert (copy.node, reason) == (chain.nodes[1].account.address, RejectReason.DUPLICATE_UPDATE)
    verdict = verify_version(LedgerClient(chain.w3, chain.address), store, result.model_hash, max_bytes=MAX_BYTES)
    assert verdict is not None and verdict.ok, verdict.to_json()
    assert sorted(verdict.updates) == sorted([shared, own])
    assert [check.status for check in verdict.rejections] == [RejectionStatus.CONFIRMED]
