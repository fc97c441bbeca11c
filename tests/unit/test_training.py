"""Local training: deterministic bytes, untouched inputs, and FedAvg over nodes that actually learns."""

from __future__ import annotations

import torch

from ledger.core.aggregation import Update, fedavg
from edge_node.training import train_local
from ledger.core.data import DigitsSplit, split_shards
from ledger.core.hashing import sha256_hex
from ledger.core.model import build_model, evaluate, load_state, state_tensors
from ledger.core.serialization import serialize_tensors

HYPER = {"epochs": 2, "batch_size": 32, "lr": 0.1}


def test_same_seed_same_bytes_and_inputs_untouched(digits: DigitsSplit) -> None:
    base = state_tensors(build_model(0))
    snapshot = {name: tensor.clone() for name, tensor in base.items()}
    shard = split_shards(digits.train, 5, iid=True, seed=0)[0]

    first = serialize_tensors(train_local(base, shard, seed=7, **HYPER))
    again = serialize_tensors(train_local(base, shard, seed=7, **HYPER))
    other = serialize_tensors(train_local(base, shard, seed=8, **HYPER))

    assert first == again != other
    assert all(torch.equal(base[name], snapshot[name]) for name in base)


def test_three_fedavg_rounds_of_five_iid_nodes_reach_90_percent(digits: DigitsSplit) -> None:
    # Prepare
    shards = split_shards(digits.train, 5, iid=True, seed=0)
    global_weights = state_tensors(build_model(0))

    # Execute
    for round_number in range(3):
        updates = []
        for node, shard in enumerate(shards):
            weights = train_local(global_weights, shard, seed=100 * round_number + node, **HYPER)
            updates.append(Update(sha256_hex(serialize_tensors(weights)), len(shard), weights))
        global_weights = fedavg(updates)
    model = build_model(0)
    load_state(model, global_weights)

    # Assert
    assert evaluate(model, digits.test.x, digits.test.y) >= 0.90
