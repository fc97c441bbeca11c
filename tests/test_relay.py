"""Relayed (signed, batched) and direct submissions mixed in one round commit the same model as all-direct,
and a relayer that withholds a record cannot keep its node out."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aggregator.coordinator import Aggregator, AggregatorConfig
from edge_node.node import EdgeNode, Outcome, TrainingConfig
from ledger.chain.client import sign_submission
from ledger.chain.inprocess import InProcessLedger, start_in_process_ledger
from ledger.chain.relay import relay_records
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.partition import split_examples
from ledger.store.local import LocalBlobStore
from ledger.store.relay import RelayFolder

NODES = 5
MAX_BYTES = 16 * 1024 * 1024
GRACE_SECONDS = 30


def federation(root: Path, relayed: set[int]) -> tuple[InProcessLedger, Aggregator, list[EdgeNode], RelayFolder]:
    """A fresh ledger whose nodes in `relayed` hand their submissions to a relay folder."""
    torch.set_num_threads(1)
    chain = start_in_process_ledger(NODES)
    store = LocalBlobStore(root / "blobs", max_bytes=MAX_BYTES)
    folder = RelayFolder(root / "relay")
    split = DIGITS_MLP.bundled_data()
    shards = split_examples(split.train, NODES, iid=True, seed=0)
    hyper = {"epochs": 1}
    config = AggregatorConfig(hyperparameters=hyper, min_updates=NODES, round_seconds=600)
    aggregator = Aggregator(chain.admin, store, split.test, config)
    aggregator.ensure_genesis()
    nodes = [
        EdgeNode(
            client, store, shard, TrainingConfig(hyperparameters=hyper, seed=i), max_model_bytes=MAX_BYTES,
            relay=folder if i in relayed else None,
        )  # fmt: skip
        for i, (client, shard) in enumerate(zip(chain.nodes, shards))
    ]
    return chain, aggregator, nodes, folder


def test_mixed_relayed_and_direct_submissions_commit_the_all_direct_model(tmp_path: Path) -> None:
    # Prepare: the same federation twice; in the second, nodes 0, 2 and 4 go through a relayer
    _, direct_aggregator, direct_nodes, _ = federation(tmp_path / "direct", relayed=set())
    chain, aggregator, nodes, folder = federation(tmp_path / "mixed", relayed={0, 2, 4})

    # Execute
    direct_round = direct_aggregator.open_round().round
    assert [n.participate(direct_round).outcome for n in direct_nodes] == [Outcome.SUBMITTED] * NODES
    all_direct = direct_aggregator.close_round(direct_round)
    mixed_round = aggregator.open_round().round
    outcomes = [n.participate(mixed_round).outcome for n in nodes]
    relayed = relay_records(chain.admin, mixed_round, folder.pending(mixed_round))  # the aggregator relays
    mixed = aggregator.close_round(mixed_round)

    # Assert
    assert outcomes == [Outcome.HANDED_OVER, Outcome.SUBMITTED, Outcome.HANDED_OVER, Outcome.SUBMITTED, Outcome.HANDED_OVER]
    assert len(relayed) == 1 and len(relayed[0].events) == 3  # one transaction, three UpdateSubmitted
    assert [nodes[i].ensure_submitted(mixed_round, grace_seconds=GRACE_SECONDS).outcome for i in (0, 2, 4)] == [Outcome.RELAYED] * 3
    assert mixed.committed and len(mixed.included) == NODES and not mixed.rejected
    assert mixed.model_hash == all_direct.model_hash
    assert {s.update_hash for s in mixed.included} == {s.update_hash for s in all_direct.included}


def test_a_withheld_record_is_submitted_directly_before_the_deadline(tmp_path: Path) -> None:
    chain, aggregator, nodes, folder = federation(tmp_path, relayed={1})
    round_number = aggregator.open_round().round
    for node in nodes:
        node.participate(round_number)
    withheld = {k: v for k, v in folder.pending(round_number).items() if k != nodes[1].address}
    assert relay_records(chain.admin, round_number, withheld) == []  # a censoring relayer posts nothing

    waiting = nodes[1].ensure_submitted(round_number, grace_seconds=GRACE_SECONDS)
    chain.advance_time(600 - GRACE_SECONDS)  # chain time reaches the node's fallback point
    fallback = nodes[1].ensure_submitted(round_number, grace_seconds=GRACE_SECONDS)
    result = aggregator.close_round(round_number)

    assert waiting.outcome is Outcome.HANDED_OVER
    assert fallback.outcome is Outcome.SUBMITTED and fallback.update_hash == waiting.update_hash
    assert result.committed and nodes[1].address in {s.node for s in result.included}


def test_the_relayer_drops_records_the_contract_would_refuse(ledger_chain: InProcessLedger) -> None:
    admin, nodes = ledger_chain.admin, ledger_chain.nodes
    admin.commit_genesis("11" * 32, "22" * 32)
    admin.open_round(1, "11" * 32, ledger_chain.now() + 600, 1)
    stranger = ledger_chain.new_account("stranger")
    good = sign_submission(nodes[0].account, admin.chain_id, admin.address, 1, "aa" * 32, 10)
    other_round = sign_submission(nodes[1].account, admin.chain_id, admin.address, 2, "bb" * 32, 10)
    not_a_node = sign_submission(stranger, admin.chain_id, admin.address, 1, "cc" * 32, 10)
    tampered = good[:32] + (11).to_bytes(8, "big") + good[40:]  # another sample count: another signer

    results = relay_records(admin, 1, {"a": good, "b": other_round, "c": not_a_node, "d": tampered, "e": good[:50]})

    assert len(results) == 1 and len(results[0].events) == 1
    assert admin.submission_of(1, nodes[0].account.address) == "aa" * 32
    assert admin.submission_of(1, nodes[1].account.address) is None
    with pytest.raises(ValueError):
        RelayFolder(Path("unused")).hand_over(1, nodes[0].account.address, good[:50])
