"""Deadlines judged by chain time on a real, idle anvil (automine: no block unless a transaction comes).

These are the failures of issue 8 made into tests: an abandon decided by the wall clock and
estimated against a stale block reverted (`DeadlineNotPassed`), a quorum round with a dropped node
died with `TooFewUpdates`, and a last-second submission reverted undecodably.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from aggregator.coordinator import Aggregator, AggregatorConfig
from edge_node.node import EdgeNode, Outcome, TrainingConfig
from ledger.chain import events
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.connect import connect
from ledger.chain.devkeys import dev_account
from ledger.chain.devnet import Devnet, rpc_call, throwaway_devnet
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.partition import split_examples
from ledger.core.reasons import AbandonReason
from ledger.store.local import LocalBlobStore

pytestmark = pytest.mark.devnet

MAX_BYTES = 1 << 20


@pytest.fixture(scope="module")
def anvil() -> Iterator[Devnet]:
    with throwaway_devnet() as devnet:
        yield devnet


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    split = DIGITS_MLP.bundled_data()
    return split, split_examples(split.train, 3, iid=True, seed=0)


@dataclass
class Federation:
    anvil: Devnet
    aggregator: Aggregator
    nodes: list[EdgeNode]

    def rpc(self, method: str, *params: object) -> object:
        return rpc_call(self.anvil.rpc_url, method, list(params))


def federation(anvil, digits, tmp_path, **config) -> Federation:
    """A fresh ledger on the shared anvil, three registered nodes, genesis committed."""
    admin, _ = LedgerClient.deploy(connect(anvil.rpc_url), dev_account(0))
    store = LocalBlobStore(tmp_path / "blobs", max_bytes=4 * MAX_BYTES)
    nodes = []
    for index in range(3):
        account = dev_account(index + 1)
        admin.register_node(account.address)
        nodes.append(
            EdgeNode(admin.as_account(account), store, digits[1][index], TrainingConfig(hyperparameters={"epochs": 1}, seed=index), max_model_bytes=MAX_BYTES)
        )
    config.setdefault("max_update_bytes", MAX_BYTES)
    config.setdefault("hyperparameters", {"epochs": 1})  # the nodes' (the task spec genesis pins)
    aggregator = Aggregator(admin, store, digits[0].test, AggregatorConfig(**config))
    aggregator.ensure_genesis()
    return Federation(anvil, aggregator, nodes)


def test_round_every_node_misses_is_abandoned_on_an_idle_anvil(anvil, digits, tmp_path):
    fed = federation(anvil, digits, tmp_path, round_seconds=2, min_updates=1)
    info = fed.aggregator.open_round()

    result = fed.aggregator.close_round(info.round)  # nothing arrives; anvil mines nothing by itself

    assert result.abandon_reason is AbandonReason.NO_SUBMISSIONS
    client = fed.aggregator.client
    assert client.get_round(info.round).state is RoundState.ABANDONED
    assert client.w3.eth.get_block("latest")["timestamp"] > info.deadline


def test_quorum_round_with_a_dropped_node_finalizes_after_the_deadline_with_what_it_has(anvil, digits, tmp_path):
    fed = federation(anvil, digits, tmp_path, round_seconds=600, min_updates=2)
    info = fed.aggregator.open_round()
    assert fed.nodes[0].participate(info.round).outcome is Outcome.SUBMITTED  # the other two dropped out
    fed.rpc("evm_increaseTime", 601)  # chain time jumps; the latest block still carries the old time

    result = fed.aggregator.close_round(info.round)

    assert result.committed and [s.node for s in result.included] == [fed.nodes[0].address]
    assert fed.aggregator.client.get_round(info.round).state is RoundState.FINALIZED


def test_a_submission_in_the_last_second_lands_and_one_after_it_is_told_round_closed(anvil, digits, tmp_path):
    fed = federation(anvil, digits, tmp_path, round_seconds=600, min_updates=3)
    info = fed.aggregator.open_round()

    fed.rpc("evm_setNextBlockTimestamp", info.deadline)  # the submission's block is the deadline itself
    on_time = fed.nodes[0].participate(info.round)
    fed.rpc("evm_setNextBlockTimestamp", info.deadline + 1)
    late = fed.nodes[1].participate(info.round)

    assert on_time.outcome is Outcome.SUBMITTED
    assert fed.aggregator.client.w3.eth.get_block(on_time.block_number)["timestamp"] == info.deadline
    assert late.outcome is Outcome.ROUND_CLOSED
    assert fed.aggregator.client.submission_of(info.round, fed.nodes[1].address) is None


def test_a_submission_whose_block_lands_after_the_deadline_reverts_as_deadline_passed(anvil, digits, tmp_path):
    from ledger.chain import errors

    fed = federation(anvil, digits, tmp_path, round_seconds=600, min_updates=3)
    info = fed.aggregator.open_round()
    node = fed.nodes[2].client
    fed.rpc("evm_setAutomine", False)
    try:
        # Simulated against the pending block (before the deadline), mined in a block after it.
        fed.rpc("evm_setNextBlockTimestamp", info.deadline - 5)
        from threading import Thread

        outcome: list[BaseException | object] = []
        sender = Thread(target=lambda: outcome.append(_capture(lambda: node.submit_update(info.round, "ab" * 32, 10))))
        sender.start()
        _wait_pending(fed, node.account.address)
        fed.rpc("evm_setNextBlockTimestamp", info.deadline + 1)
        fed.rpc("evm_mine")
        sender.join(timeout=30)
    finally:
        fed.rpc("evm_setAutomine", True)
    assert isinstance(outcome[0], errors.DeadlinePassed)
    assert outcome[0].round == info.round and outcome[0].deadline == info.deadline


def _capture(action):
    try:
        return action()
    except BaseException as exc:  # noqa: BLE001 - handed to the test thread to assert on
        return exc


def _wait_pending(fed: Federation, address: str) -> None:
    from ledger.core.polling import poll_until

    poll_until(
        lambda: int(fed.rpc("eth_getTransactionCount", address, "pending"), 16)
        > int(fed.rpc("eth_getTransactionCount", address, "latest"), 16),
        timeout=30,
        interval=0.02,
        what="the submission to reach the pool",
    )


def test_round_abandon_closes_a_round_past_its_deadline_and_refuses_one_still_open(anvil, digits, tmp_path, capsys):
    from ledger.cli.main import main

    fed = federation(anvil, digits, tmp_path, round_seconds=600, min_updates=1)
    info = fed.aggregator.open_round()  # ... and the aggregator is gone for good
    command = ["round", "abandon", str(info.round), "--rpc-url", anvil.rpc_url, "--contract", fed.aggregator.client.address]

    assert main([*command, "--dev-key", "0"]) == 1  # 600 s of chain time left
    assert "still open for" in capsys.readouterr().err
    assert main([*command, "--dev-key", "1"]) == 1  # a node's key holds no aggregator role
    assert "aggregator role" in capsys.readouterr().err
    fed.rpc("evm_increaseTime", 601)  # no block yet: the abandon must make one rather than revert
    assert main([*command, "--dev-key", "0", "--json"]) == 0

    assert fed.aggregator.client.get_round(info.round).state is RoundState.ABANDONED
    abandoned = fed.aggregator.client.events(event_type=events.RoundAbandoned)
    assert [(e.round, e.reason_code) for e in abandoned] == [(info.round, AbandonReason.BY_OPERATOR)]
