"""Federated rounds on the in-process chain: honest merges, every kind of bad update, deadlines."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

from aggregator.coordinator import Aggregator, AggregatorConfig
from edge_node.misbehaviour import poison_transform, tamper_at_rest
from edge_node.node import EdgeNode, Outcome, TrainingConfig
from ledger.chain import events
from ledger.core.aggregation import RULES, Update, aggregate
from ledger.chain.client import RoundState
from ledger.core.hashing import sha256_hex
from ledger.core.merkle import merkle_root
from ledger.core.reasons import AbandonReason, RejectReason
from ledger.chain.rounds import round_rejections
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.local import LocalBlobStore
from support import MAX_BYTES

HYPER = {"epochs": 2}


def make_aggregator(chain, store, digits, **config):
    split, _ = digits
    config.setdefault("min_updates", 3)
    config.setdefault("max_update_bytes", MAX_BYTES)
    config.setdefault("hyperparameters", HYPER)
    aggregator = Aggregator(chain.admin, store, split.test, AggregatorConfig(**config))
    aggregator.ensure_genesis()
    return aggregator


def make_nodes(chain, store, digits, hooks=None):
    hooks = hooks or {}
    _, shards = digits
    return [
        EdgeNode(client, store, shard, TrainingConfig(hyperparameters=HYPER, seed=i), max_model_bytes=MAX_BYTES, **hooks.get(i, {}))
        for i, (client, shard) in enumerate(zip(chain.nodes, shards))
    ]


def test_honest_rounds_commit_a_lineage_that_fedavg_reproduces(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, rule="fedavg")
    nodes = make_nodes(ledger_chain, store, digits)
    results = []
    for _ in range(2):
        info = aggregator.open_round()
        assert [n.participate(info.round).outcome for n in nodes] == [Outcome.SUBMITTED] * 5
        results.append(aggregator.close_round(info.round))
    second = results[1]
    assert (len(second.included), second.rejected) == (5, ())
    assert second.base_model_hash == results[0].model_hash
    assert ledger_chain.admin.model_of(second.model_hash).version == 2
    assert ledger_chain.admin.get_round(2).state is RoundState.FINALIZED
    # Re-derive round 2 from the chain's events and the stored blobs alone.
    updates = [
        Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=MAX_BYTES))
        for s in second.included
    ]
    assert sha256_hex(serialize_tensors(aggregate("fedavg", updates))) == second.model_hash
    committed = [e for e in ledger_chain.admin.events(event_type=events.ModelCommitted) if e.round == 2][0]
    assert committed.included_root == merkle_root([bytes.fromhex(s.update_hash) for s in second.included]).hex()
    assert second.accuracy > results[0].accuracy > 0.5


def test_tampered_and_poisoned_updates_are_rejected_on_chain_and_the_round_commits(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits)
    nodes = make_nodes(
        ledger_chain,
        store,
        digits,
        {1: {"after_upload": tamper_at_rest(store.root)}, 3: {"transform": poison_transform()}},
    )
    expected = {1: RejectReason.HASH_MISMATCH, 3: RejectReason.NON_FINITE}
    for round_expectation in (expected, {1: RejectReason.HASH_MISMATCH, 3: RejectReason.NORM_TOO_LARGE}):
        info = aggregator.open_round()
        for node in nodes:
            node.participate(info.round)
        result = aggregator.close_round(info.round)
        assert result.committed and len(result.included) == 3
        recorded = {e.node: e.reason_code for e in round_rejections(ledger_chain.admin, info.round)}
        assert recorded == {nodes[i].address: int(reason) for i, reason in round_expectation.items()}
        for index, reason in round_expectation.items():
            assert ledger_chain.admin.rejection_of(info.round, nodes[index].address) == reason


def _submit_raw(node_client, store, round_number, blob, num_samples=100):
    update_hash = sha256_hex(blob)
    store.root.joinpath(update_hash[:2]).mkdir(parents=True, exist_ok=True)
    store.path_for(update_hash).write_bytes(blob)  # bypass the store's size limit, as a hostile node would
    node_client.submit_update(round_number, update_hash, num_samples)
    return update_hash


def test_wrong_shape_non_safetensors_oversized_and_missing_blobs_are_rejected(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=1)
    honest = make_nodes(ledger_chain, store, digits)[0]
    info = aggregator.open_round()
    honest.participate(info.round)
    base = deserialize_tensors(store.get(info.base_model_hash), max_bytes=MAX_BYTES)
    wrong_shape = {name: torch.zeros(tensor.shape[0] + 1, *tensor.shape[1:]) for name, tensor in base.items()}
    buffer = __import__("io").BytesIO()
    torch.save({"weights": torch.zeros(3)}, buffer)  # a pickle: must never be loaded
    clients = ledger_chain.nodes
    _submit_raw(clients[1], store, info.round, serialize_tensors(wrong_shape))
    _submit_raw(clients[2], store, info.round, buffer.getvalue())
    _submit_raw(clients[3], store, info.round, b"\0" * (2 * MAX_BYTES))
    clients[4].submit_update(info.round, sha256_hex(b"never uploaded"), 10)
    result = aggregator.close_round(info.round)
    assert result.committed and [s.node for s in result.included] == [honest.address]
    reasons = {e.node: RejectReason(e.reason_code) for e in round_rejections(ledger_chain.admin, info.round)}
    assert reasons == {
        clients[1].account.address: RejectReason.SHAPE_MISMATCH,
        clients[2].account.address: RejectReason.MALFORMED,
        clients[3].account.address: RejectReason.TOO_LARGE,
        clients[4].account.address: RejectReason.MISSING_BLOB,
    }


def test_node_twice_and_closed_round_are_outcomes_not_crashes(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=1, round_seconds=60)
    node = make_nodes(ledger_chain, store, digits)[0]
    info = aggregator.open_round()
    assert node.participate(info.round).outcome is Outcome.SUBMITTED
    assert node.participate(info.round).outcome is Outcome.ALREADY_SUBMITTED
    ledger_chain.advance_time(61)  # the four other nodes never come: close at the deadline, not after 60 s of waiting
    aggregator.close_round(info.round)
    assert node.participate(info.round).outcome is Outcome.ROUND_CLOSED


def test_deadline_closes_the_round_with_the_updates_that_arrived(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=5, round_seconds=120)
    nodes = make_nodes(ledger_chain, store, digits)
    info = aggregator.open_round()
    for node in nodes[:3]:  # two nodes never answer
        node.participate(info.round)
    ledger_chain.advance_time(121)
    result = aggregator.close_round(info.round)  # returns at once: the deadline passed
    assert result.committed and len(result.included) == 3
    assert nodes[4].participate(info.round).outcome is Outcome.ROUND_CLOSED


def test_round_with_only_bad_updates_is_abandoned_after_the_deadline(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=1, round_seconds=60)
    info = aggregator.open_round()
    ledger_chain.nodes[0].submit_update(info.round, sha256_hex(b"missing"), 1)
    ledger_chain.advance_time(61)
    result = aggregator.close_round(info.round)
    assert not result.committed
    assert ledger_chain.admin.get_round(info.round).state is RoundState.ABANDONED
    abandoned = ledger_chain.admin.events(event_type=events.RoundAbandoned)
    assert [(e.round, e.reason_code) for e in abandoned] == [(info.round, AbandonReason.NO_VALID_UPDATES)]


RULE_PARAMS = {
    "fedavg": {},
    "coordinate_median": {},
    "trimmed_mean": {"trim_ratio": 0.2},
    "krum": {"num_byzantine": 1},
    "arc_nnm_trimmed_mean": {"byzantine_fraction": 0.4},
}


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_gives_the_same_committed_bytes_twice_and_in_another_process(ledger_chain, store, digits, rule):
    aggregator = make_aggregator(ledger_chain, store, digits, rule=rule, rule_params=RULE_PARAMS[rule])
    nodes = make_nodes(ledger_chain, store, digits)
    info = aggregator.open_round()
    for node in nodes:
        node.participate(info.round)
    result = aggregator.close_round(info.round)
    hashes = [s.update_hash for s in result.included]
    params = aggregator.config.policy.rule_call_params()  # what the round ran with and recorded
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from ledger.core.aggregation import Update, aggregate
        from ledger.core.hashing import sha256_hex
        from ledger.core.serialization import deserialize_tensors, serialize_tensors
        from ledger.store.local import LocalBlobStore
        store = LocalBlobStore(Path({str(store.root)!r}), max_bytes={MAX_BYTES})
        samples = {dict((s.update_hash, s.num_samples) for s in result.included)!r}
        updates = [Update(h, samples[h], deserialize_tensors(store.get(h), max_bytes={MAX_BYTES})) for h in reversed({hashes!r})]
        base = deserialize_tensors(store.get({info.base_model_hash!r}), max_bytes={MAX_BYTES})
        print(sha256_hex(serialize_tensors(aggregate({rule!r}, updates, base=base, **{params!r}))))
        """
    )
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert other.stdout.strip() == result.model_hash
    again = [Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=MAX_BYTES)) for s in result.included]
    base = deserialize_tensors(store.get(info.base_model_hash), max_bytes=MAX_BYTES)
    assert sha256_hex(serialize_tensors(aggregate(rule, again, base=base, **params))) == result.model_hash


# ---------------------------------------------------------------- hostile registered nodes


def _audit(chain, store, model_hash):
    from ledger.audit.rederive import verify_version

    verdict = verify_version(chain.admin, store, model_hash, max_bytes=MAX_BYTES)
    assert verdict is not None
    return verdict


def test_a_copied_hash_is_merged_once_and_the_copy_rejected_as_a_duplicate(ledger_chain, store, digits):
    from edge_node.misbehaviour import copy_hash

    aggregator = make_aggregator(ledger_chain, store, digits)
    nodes = make_nodes(ledger_chain, store, digits, {4: {"attack": copy_hash()}})
    info = aggregator.open_round()
    for node in nodes:  # node 4 goes last and submits node 0's hash with its own sample count
        node.participate(info.round)

    result = aggregator.close_round(info.round)

    original = ledger_chain.admin.submission_of(info.round, nodes[0].address)
    assert ledger_chain.admin.submission_of(info.round, nodes[4].address) == original
    assert [s.update_hash for s in result.included].count(original) == 1
    assert [(s.node, reason) for s, reason, _ in result.rejected] == [(nodes[4].address, RejectReason.DUPLICATE_UPDATE)]
    verdict = _audit(ledger_chain, store, result.model_hash)  # the auditor matches (hash, node): no false alarm
    assert verdict.findings == () and verdict.rederived_hash == result.model_hash


def test_an_inflated_sample_count_weighs_no_more_than_the_pinned_cap(ledger_chain, store, digits):
    from edge_node.misbehaviour import inflated_samples

    aggregator = make_aggregator(ledger_chain, store, digits, rule="fedavg", max_num_samples=300)
    nodes = make_nodes(ledger_chain, store, digits, {2: {"attack": inflated_samples(norm=99.0)}})
    info = aggregator.open_round()
    for node in nodes:
        node.participate(info.round)

    result = aggregator.close_round(info.round)

    claimed = {s.node: s.num_samples for s in result.included}
    assert claimed[nodes[2].address] == 10**12  # on chain as claimed; weighted as at most 300
    updates = [Update(s.update_hash, s.num_samples, deserialize_tensors(store.get(s.update_hash), max_bytes=MAX_BYTES)) for s in result.included]
    assert sha256_hex(serialize_tensors(aggregate("fedavg", updates, max_samples=300))) == result.model_hash
    assert sha256_hex(serialize_tensors(aggregate("fedavg", updates))) != result.model_hash
    verdict = _audit(ledger_chain, store, result.model_hash)
    assert verdict.findings == () and verdict.rule == {"name": "fedavg", "params": {"max_samples": 300}}


def test_free_riders_returning_the_base_are_rejected_and_the_round_commits(ledger_chain, store, digits):
    from edge_node.misbehaviour import free_rider

    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=2)
    riders = {i: {"attack": free_rider()} for i in (0, 2, 4)}  # three of five: the median would be the base
    nodes = make_nodes(ledger_chain, store, digits, riders)
    info = aggregator.open_round()
    for node in nodes:
        node.participate(info.round)

    result = aggregator.close_round(info.round)

    assert result.committed and len(result.included) == 2
    reasons = {nodes[i].address: reason for i in (0, 2, 4) for s, reason, _ in result.rejected if s.node == nodes[i].address}
    # The first rider's copy of the base is a free-rider's; the others also copied a hash already in.
    assert reasons == {
        nodes[0].address: RejectReason.NO_CHANGE,
        nodes[2].address: RejectReason.DUPLICATE_UPDATE,
        nodes[4].address: RejectReason.DUPLICATE_UPDATE,
    }
    assert _audit(ledger_chain, store, result.model_hash).findings == ()


def test_a_round_whose_aggregate_is_already_committed_is_abandoned_not_wedged(ledger_chain, store, digits):
    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=1, round_seconds=60)
    nodes = make_nodes(ledger_chain, store, digits)
    first = aggregator.open_round()
    nodes[0].participate(first.round)
    ledger_chain.advance_time(61)
    version_1 = aggregator.close_round(first.round).model_hash
    second = aggregator.open_round()
    # The only update of round 2 is genesis itself: valid (it differs from round 2's base), and
    # the aggregate of one update is that update, a version the chain already holds.
    ledger_chain.nodes[1].submit_update(second.round, first.base_model_hash, 10)
    ledger_chain.advance_time(61)

    result = aggregator.close_round(second.round)

    assert not result.committed and result.abandon_reason is AbandonReason.MODEL_UNCHANGED
    assert ledger_chain.admin.get_round(second.round).state is RoundState.ABANDONED
    third = aggregator.open_round()  # the federation goes on from the latest version
    assert (third.round, third.base_model_hash) == (3, version_1)


# ---------------------------------------------------------------- policy changes (setPolicy)


def test_the_aggregator_follows_a_set_policy_it_can_apply_and_refuses_one_nodes_must_follow(ledger_chain, store, digits):
    from dataclasses import replace

    from aggregator.coordinator import PolicyConflict
    from ledger.core.metadata import encode_policy

    aggregator = make_aggregator(ledger_chain, store, digits, min_updates=1)
    nodes = make_nodes(ledger_chain, store, digits)
    first = aggregator.open_round()
    nodes[0].participate(first.round)
    aggregator.close_round(first.round)
    started_with = aggregator.config.policy
    tighter = replace(started_with, max_norm=50.0)
    ledger_chain.admin.set_policy(store.put(encode_policy(tighter)))  # from round 2 on

    second = aggregator.open_round()  # started with max_norm 100: takes over the pinned 50
    assert aggregator.config.policy == tighter
    nodes[1].participate(second.round)
    result = aggregator.close_round(second.round)
    verdict = _audit(ledger_chain, store, result.model_hash)
    assert result.committed and verdict.findings == () and verdict.rederived_hash == result.model_hash
    assert verdict.policy_source["event"] == "PolicyChanged"

    ledger_chain.admin.set_policy(store.put(encode_policy(replace(tighter, encoding="f16"))))  # nodes follow encodings
    with pytest.raises(PolicyConflict, match=r"round 3 .* in encoding: the chain pins \{'encoding': 'f16'\}; .*--encoding f16"):
        aggregator.open_round()
    assert ledger_chain.admin.counters().last_round == 2  # refused before opening
    restarted = make_aggregator(ledger_chain, store, digits, min_updates=1, encoding="f16")
    assert restarted.config.policy == replace(tighter, encoding="f16")
    assert restarted.open_round().round == 3
