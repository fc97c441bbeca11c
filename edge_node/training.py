"""Local training on an edge node: base weights and a data shard in, updated weights out.

An update is the node's full trained weights, not a delta from the base: FedAvg, median,
trimmed mean and Krum all operate on weights directly, a weights blob loads like any model, and
the aggregator (which has the base) computes the delta itself when it bounds the update's norm.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from ledger.core.data import Shard
from ledger.core.model import build_model, load_state, state_tensors

# Heavy-ball momentum: a few local epochs then reach a useful model on small shards.
MOMENTUM = 0.9


def train_local(
    base_tensors: Mapping[str, torch.Tensor],
    shard: Shard,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """The weights after `epochs` of minibatch SGD (momentum 0.9) on `shard`, from `base_tensors`.

    Deterministic: the seed drives a private generator for the batch order, and nothing else
    is random (no dropout), so the same inputs give the same bytes for a fixed torch build and
    thread count (CPU matmul results can differ in the last bit across thread counts).
    The inputs are not modified and the global RNG is not touched. `on_epoch(n)` is called as
    epoch n (1-based) starts, for progress lines.
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if len(shard) == 0:
        raise ValueError("cannot train on an empty shard")
    model = build_model(seed=0)  # architecture only; the base weights overwrite the init
    load_state(model, base_tensors)
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        if on_epoch is not None:
            on_epoch(epoch + 1)
        order = torch.randperm(len(shard), generator=generator)
        for batch in torch.split(order, batch_size):
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(shard.x[batch]), shard.y[batch])
            loss.backward()
            optimizer.step()
    return state_tensors(model)
