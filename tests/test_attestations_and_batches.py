"""The contract's auditor attestations, policy changes and relayed (EIP-712) submissions, through
the typed Python client on the in-process chain: the Python side signs exactly what Solidity hashes."""

from __future__ import annotations

import pytest
from support import h

from ledger.chain import errors, events
from ledger.chain.client import sign_submission
from ledger.chain.inprocess import start_in_process_ledger


def _only(result, event_type):
    found = [event for event in result.events if isinstance(event, event_type)]
    assert len(found) == 1, result.events
    return found[0]


@pytest.fixture
def gated():
    """A ledger deployed with an attestation quorum of 1, genesis committed, one auditor."""
    chain = start_in_process_ledger(node_count=3, attestation_quorum=1)
    chain.admin.commit_genesis(h("genesis"), h("genesis-meta"))
    auditor = chain.client(chain.new_account("auditor"))
    chain.admin.set_auditor(auditor.account.address, True)
    return chain, auditor


def test_quorum_gates_open_round_until_the_base_is_attested(gated):
    chain, auditor = gated
    assert chain.admin.attestation_quorum() == 1
    with pytest.raises(errors.BaseNotAttested) as refused:
        chain.admin.open_round(1, h("genesis"), chain.now() + 60, 1)
    assert (refused.value.okCount, refused.value.quorum, refused.value.unresolvedFailures) == (0, 1, 0)

    attested = _only(auditor.attest_version(h("genesis"), True, h("report")), events.VersionAttested)
    assert (attested.model_hash, attested.auditor, attested.ok, attested.report_hash) == (
        h("genesis"), auditor.account.address, True, h("report"),
    )
    assert chain.admin.attestation_counts(h("genesis")).current_ok == 1
    assert chain.admin.attestation_of(h("genesis"), auditor.account.address).ok
    with pytest.raises(errors.AlreadyAttested):
        auditor.attest_version(h("genesis"), False, h("second-thoughts"))
    chain.admin.open_round(1, h("genesis"), chain.now() + 60, 1)


def test_a_failing_attestation_blocks_until_the_admin_resolves_it(gated):
    chain, auditor = gated
    second = chain.client(chain.new_account("auditor-2"))
    chain.admin.set_auditor(second.account.address, True)
    auditor.attest_version(h("genesis"), True, h("ok-report"))
    second.attest_version(h("genesis"), False, h("bad-report"))
    with pytest.raises(errors.BaseNotAttested) as refused:
        chain.admin.open_round(1, h("genesis"), chain.now() + 60, 1)
    assert refused.value.unresolvedFailures == 1
    resolved = _only(
        chain.admin.resolve_attestation(h("genesis"), second.account.address, h("why")), events.AttestationResolved
    )
    assert (resolved.auditor, resolved.resolution_hash) == (second.account.address, h("why"))
    chain.admin.open_round(1, h("genesis"), chain.now() + 60, 1)


def test_only_auditors_attest(gated):
    chain, _ = gated
    with pytest.raises(errors.NotAuditor):
        chain.nodes[0].attest_version(h("genesis"), True, h("report"))


def test_policy_changes_are_recorded_for_the_next_round(gated):
    chain, _ = gated
    changed = _only(chain.admin.set_policy(h("policy-2")), events.PolicyChanged)
    assert (changed.from_round, changed.policy_hash) == (1, h("policy-2"))
    with pytest.raises(errors.NotAdmin):
        chain.nodes[0].set_policy(h("policy-3"))


def test_relayed_signed_submissions_record_the_same_facts_as_direct_ones():
    chain = start_in_process_ledger(node_count=3)
    chain.admin.commit_genesis(h("genesis"), h("genesis-meta"))
    chain.admin.open_round(1, h("genesis"), chain.now() + 600, 3)
    direct = chain.nodes[0].submit_update(1, h("u0"), 100)
    records = [
        sign_submission(node.account, chain.admin.chain_id, chain.address, 1, h(f"u{index}"), 100 + index)
        for index, node in enumerate(chain.nodes)
    ]
    # Anyone may relay: here a node relays the others' (its own is skipped: it already submitted).
    relayed = chain.nodes[2].submit_updates_by_sig(1, records)
    submitted = [e for e in relayed.events if isinstance(e, events.UpdateSubmitted)]
    assert [(e.node, e.update_hash, e.num_samples) for e in submitted] == [
        (chain.nodes[1].account.address, h("u1"), 101),
        (chain.nodes[2].account.address, h("u2"), 102),
    ]
    first = _only(direct, events.UpdateSubmitted)
    assert (first.node, first.update_hash, first.num_samples) == (chain.nodes[0].account.address, h("u0"), 100)
    assert chain.admin.hash_submission(1, h("u1"), 101) != chain.admin.hash_submission(2, h("u1"), 101)


def test_a_record_signed_for_another_round_names_its_index():
    chain = start_in_process_ledger(node_count=2)
    chain.admin.commit_genesis(h("genesis"), h("genesis-meta"))
    chain.admin.open_round(1, h("genesis"), chain.now() + 600, 2)
    good = sign_submission(chain.nodes[0].account, chain.admin.chain_id, chain.address, 1, h("a"), 5)
    replayed = sign_submission(chain.nodes[1].account, chain.admin.chain_id, chain.address, 2, h("b"), 5)
    with pytest.raises(errors.SignerNotNode) as refused:
        chain.admin.submit_updates_by_sig(1, [good, replayed])
    assert refused.value.index == 1
    assert chain.admin.submission_of(1, chain.nodes[0].account.address) is None  # the batch reverted whole
