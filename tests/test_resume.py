"""The aggregator resumes from the chain: every step idempotent, rejections final, refusals are results.

In-process chain (the crash is played by stopping after a step and starting a fresh `Aggregator`
on the same chain and store); the kill -9 versions with real processes are in test_faults.py.
"""

from __future__ import annotations

import pytest

from aggregator.coordinator import Aggregator, AggregatorConfig
from edge_node.node import EdgeNode, Outcome, TrainingConfig
from ledger.chain import events
from ledger.chain.client import RoundState
from ledger.chain.clock import ChainClock
from ledger.chain.follow import NewHeads
from ledger.chain.rounds import round_rejections, round_submissions
from ledger.core.hashing import sha256_hex
from ledger.core.reasons import AbandonReason, RejectReason
from support import MAX_BYTES


def fresh_aggregator(chain, store, digits, **config):
    """A new aggregator process's view: nothing but the chain and the store survive a crash."""
    config.setdefault("min_updates", 2)
    config.setdefault("max_update_bytes", MAX_BYTES)
    config.setdefault("hyperparameters", {"epochs": 1})  # the nodes' (the task spec genesis pins)
    return Aggregator(chain.admin, store, digits[0].test, AggregatorConfig(**config))


def honest_nodes(chain, store, digits, count):
    return [
        EdgeNode(client, store, shard, TrainingConfig(hyperparameters={"epochs": 1}, seed=i), max_model_bytes=MAX_BYTES)
        for i, (client, shard) in enumerate(zip(chain.nodes[:count], digits[1]))
    ]


def test_genesis_is_committed_once_and_a_closed_round_is_read_back_not_redone(ledger_chain, store, digits):
    first = fresh_aggregator(ledger_chain, store, digits)
    genesis = first.ensure_genesis()
    info = first.open_round()
    for node in honest_nodes(ledger_chain, store, digits, 5):
        node.participate(info.round)
    committed = first.close_round(info.round)
    blocks_before = ledger_chain.w3.eth.block_number

    again = fresh_aggregator(ledger_chain, store, digits)
    assert again.ensure_genesis() == genesis
    replay = again.close_round(info.round)

    assert ledger_chain.w3.eth.block_number == blocks_before  # nothing sent
    assert replay.found_closed and replay.model_hash == committed.model_hash
    assert {s.update_hash for s in replay.included} == {s.update_hash for s in committed.included}
    assert len(ledger_chain.admin.events(event_type=events.ModelCommitted)) == 2


def test_a_rejection_already_on_chain_is_final_and_never_sent_again(ledger_chain, store, digits):
    aggregator = fresh_aggregator(ledger_chain, store, digits)
    aggregator.ensure_genesis()
    info = aggregator.open_round()
    nodes = honest_nodes(ledger_chain, store, digits, 5)
    for node in nodes:
        node.participate(info.round)
    # A previous run rejected node 4 (say its blob was missing then) and crashed before finalizing.
    ledger_chain.admin.reject_update(info.round, nodes[4].address, RejectReason.MISSING_BLOB)

    result = fresh_aggregator(ledger_chain, store, digits).close_round(info.round)

    assert result.committed and len(result.included) == 4
    assert nodes[4].address not in {s.node for s in result.included}
    recorded = [(e.node, e.reason_code) for e in round_rejections(ledger_chain.admin, info.round)]
    assert recorded == [(nodes[4].address, RejectReason.MISSING_BLOB)]  # once, with the first reason


def test_a_copy_of_an_update_rejected_before_a_restart_is_still_a_duplicate(ledger_chain, store, digits):
    aggregator = fresh_aggregator(ledger_chain, store, digits)
    aggregator.ensure_genesis()
    info = aggregator.open_round()
    nodes = honest_nodes(ledger_chain, store, digits, 4)
    original = nodes[0].participate(info.round)
    for node in nodes[1:]:
        node.participate(info.round)
    copier = ledger_chain.nodes[4]
    copier.submit_update(info.round, original.update_hash, original.num_samples)  # later on chain: a copy
    # A previous run rejected the original (say its blob was missing then) and crashed before the copy's turn.
    ledger_chain.admin.reject_update(info.round, nodes[0].address, RejectReason.MISSING_BLOB)

    result = fresh_aggregator(ledger_chain, store, digits).close_round(info.round)

    assert result.committed and {s.node for s in result.included} == {node.address for node in nodes[1:]}
    recorded = {e.node: e.reason_code for e in round_rejections(ledger_chain.admin, info.round)}
    assert recorded == {nodes[0].address: RejectReason.MISSING_BLOB, copier.account.address: RejectReason.DUPLICATE_UPDATE}


def test_a_rule_that_refuses_the_valid_updates_abandons_the_round_with_its_reason(ledger_chain, store, digits):
    aggregator = fresh_aggregator(ledger_chain, store, digits, rule="krum", rule_params={"num_byzantine": 1}, min_updates=1)
    aggregator.ensure_genesis()
    info = aggregator.open_round()
    for node in honest_nodes(ledger_chain, store, digits, 4):  # Krum with f=1 needs 5
        assert node.participate(info.round).outcome is Outcome.SUBMITTED

    result = aggregator.close_round(info.round)  # waits for a fifth update or the deadline (chain time)

    assert not result.committed and result.abandon_reason is AbandonReason.RULE_REFUSED
    assert ledger_chain.admin.get_round(info.round).state is RoundState.ABANDONED
    abandoned = ledger_chain.admin.events(event_type=events.RoundAbandoned)
    assert [(e.round, e.reason_code) for e in abandoned] == [(info.round, AbandonReason.RULE_REFUSED)]
    assert ledger_chain.now() > info.deadline  # abandoned only once chain time passed the deadline


def test_run_resumes_an_open_round_and_stops_after_the_last_one(ledger_chain, store, digits):
    crashed = fresh_aggregator(ledger_chain, store, digits)
    crashed.ensure_genesis()
    info = crashed.open_round()  # ... and the process died here
    nodes = honest_nodes(ledger_chain, store, digits, 5)
    for node in nodes:
        node.participate(info.round)
    results = []

    fresh_aggregator(ledger_chain, store, digits).run(1, results.append)

    assert [(r.round, r.committed, r.found_closed) for r in results] == [(1, True, False)]
    assert ledger_chain.admin.counters().last_round == 1
    fresh_aggregator(ledger_chain, store, digits).run(1, results.append)  # nothing left to do
    assert len(results) == 1


def test_in_process_clock_moves_chain_time_to_a_deadline_only_when_asked(ledger_chain):
    clock = ChainClock(ledger_chain.w3)
    deadline = clock.now() + 3600

    assert clock.passed(deadline) is None and not clock.too_late(deadline)
    head = clock.wait_past(deadline, timeout=5)

    assert head.timestamp > deadline and clock.passed(deadline) == head


def test_a_node_asked_after_the_deadline_does_not_train(ledger_chain, store, digits):
    aggregator = fresh_aggregator(ledger_chain, store, digits)
    aggregator.ensure_genesis()
    info = aggregator.open_round()
    ledger_chain.advance_time(info.deadline - ledger_chain.now() + 1)
    node = honest_nodes(ledger_chain, store, digits, 1)[0]

    outcome = node.participate(info.round)

    assert outcome.outcome is Outcome.ROUND_CLOSED and outcome.train_seconds == 0.0
    assert ledger_chain.admin.submission_of(info.round, node.address) is None


def test_an_update_whose_blob_vanished_is_rejected_missing_not_crashed(ledger_chain, store, digits):
    aggregator = fresh_aggregator(ledger_chain, store, digits, min_updates=1)
    aggregator.ensure_genesis()
    info = aggregator.open_round()
    ledger_chain.nodes[0].submit_update(info.round, sha256_hex(b"never stored"), 10)
    ledger_chain.advance_time(info.deadline - ledger_chain.now() + 1)

    result = aggregator.close_round(info.round)

    assert result.abandon_reason is AbandonReason.NO_VALID_UPDATES
    assert [r for _, r, _ in result.rejected] == [RejectReason.MISSING_BLOB]


def test_round_windows_grow_with_the_federation_and_the_chain_s_pace():
    from aggregator.coordinator import MIN_ROUND_SECONDS, round_window

    assert round_window(5, 16.0) == MIN_ROUND_SECONDS + 1
    assert round_window(1_000, 16.0) == MIN_ROUND_SECONDS + 125  # the default minute fits < 1,000 nodes
    assert round_window(10_000, 16.0) > 20 * 60
    assert round_window(1_000, 4.0) == 4 * round_window(1_000, 16.0) - 3 * MIN_ROUND_SECONDS


class ScriptedHeads(NewHeads):
    """New-head waits that first play the given chain actions (each wait, the next one)."""

    def __init__(self, w3, actions) -> None:  # type: ignore[no-untyped-def]
        super().__init__(w3, websocket=False, poll_seconds=0.01)
        self.actions = list(actions)

    def wait(self, after: int, timeout: float) -> int:
        if self.actions:
            self.actions.pop(0)()
        return super().wait(after, timeout)


def test_a_reorg_while_the_round_is_open_is_read_again_and_only_the_new_branch_is_merged(ledger_chain, store, digits):
    # Prepare: node 0's update is on chain and read by the aggregator, then the chain reorganizes
    tester = ledger_chain.w3.provider.ethereum_tester
    nodes = honest_nodes(ledger_chain, store, digits, 5)
    other = EdgeNode(ledger_chain.nodes[0], store, digits[1][0], TrainingConfig(hyperparameters={"epochs": 1}, seed=99),
                     max_model_bytes=MAX_BYTES)  # fmt: skip

    def reorg() -> None:  # the other branch: node 0 submitted another update, and everyone else too
        tester.revert_to_snapshot(snapshot)
        for node in [other, *nodes[1:]]:
            assert node.participate(1).outcome is Outcome.SUBMITTED
        tester.mine_blocks(2)

    heads = ScriptedHeads(ledger_chain.w3, [reorg])
    aggregator = Aggregator(ledger_chain.admin, store, digits[0].test, fresh_aggregator(ledger_chain, store, digits).config, heads=heads)
    aggregator.ensure_genesis()
    aggregator.open_round()
    snapshot = tester.take_snapshot()
    dropped = nodes[0].participate(1).update_hash

    # Execute
    result = aggregator.close_round(1)

    # Assert: the round closed on the new branch's five updates; the dropped one is nowhere
    on_chain = {s.node: s.update_hash for s in round_submissions(ledger_chain.admin, 1)}
    assert result.committed and len(result.included) == 5
    assert {s.node: s.update_hash for s in result.included} == on_chain
    assert dropped not in on_chain.values() and on_chain[ledger_chain.nodes[0].account.address] != dropped
    assert heads.actions == []  # the reorg was played while the aggregator waited
