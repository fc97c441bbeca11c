"""Local training: deterministic bytes, untouched inputs, only trainable tensors out, and FedAvg that learns."""

from __future__ import annotations

import torch

from edge_node.training import train_local
from ledger.core.aggregation import Update, fedavg
from ledger.core.hashing import sha256_hex
from ledger.core.model import load_state, state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.task import DataSplit
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.finetune import DIGITS_FINETUNE
from ledger.tasks.partition import split_examples
from ledger.tasks.spec import task_spec
from ledger.tasks.training import classifier_metrics

HYPER = {"epochs": 2, "batch_size": 32, "lr": 0.1}


def test_same_seed_same_bytes_and_inputs_untouched(digits: DataSplit) -> None:
    spec = task_spec(DIGITS_MLP, HYPER)
    base = state_tensors(DIGITS_MLP.build_model(0))
    snapshot = {name: tensor.clone() for name, tensor in base.items()}
    shard = split_examples(digits.train, 5, iid=True, seed=0)[0]

    first = serialize_tensors(train_local(DIGITS_MLP, spec, base, shard, seed=7))
    again = serialize_tensors(train_local(DIGITS_MLP, spec, base, shard, seed=7))
    other = serialize_tensors(train_local(DIGITS_MLP, spec, base, shard, seed=8))

    assert first == again != other
    assert all(torch.equal(base[name], snapshot[name]) for name in base)


def test_a_fine_tuning_update_holds_only_the_head(digits: DataSplit) -> None:
    spec = task_spec(DIGITS_FINETUNE, {"epochs": 1})
    base = state_tensors(DIGITS_FINETUNE.build_model(0))
    shard = split_examples(DIGITS_FINETUNE.bundled_data().train, 5, iid=True, seed=0)[0]

    update = train_local(DIGITS_FINETUNE, spec, base, shard, seed=1)

    assert sorted(update) == ["head.bias", "head.weight"]
    assert not torch.equal(update["head.weight"], base["head.weight"])


def test_three_fedavg_rounds_of_five_iid_nodes_reach_90_percent(digits: DataSplit) -> None:
    # Prepare
    spec = task_spec(DIGITS_MLP, HYPER)
    shards = split_examples(digits.train, 5, iid=True, seed=0)
    global_weights = state_tensors(DIGITS_MLP.build_model(0))

    # Execute
    for round_number in range(3):
        updates = []
        for node, shard in enumerate(shards):
            weights = train_local(DIGITS_MLP, spec, global_weights, shard, seed=100 * round_number + node)
            updates.append(Update(sha256_hex(serialize_tensors(weights)), len(shard), weights))
        global_weights = fedavg(updates)
    model = DIGITS_MLP.build_model(0)
    load_state(model, global_weights)

    # Assert
    assert classifier_metrics(model, digits.test)["accuracy"] >= 0.90
