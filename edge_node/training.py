"""Local training on an edge node: the round's base weights and the node's data in, its update out.

An update is the node's trained trainable tensors (the task's manifest says which), not a delta
from the base: FedAvg, median, trimmed mean and Krum all operate on weights directly, and the
aggregator (which has the base) computes the delta itself when it bounds the update's norm.
Frozen tensors never travel; every party copies them from the base.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ledger.core.model import load_state
from ledger.core.task import Examples, Task, TaskError, TrainConfig
from ledger.core.task_spec import TaskSpec


def train_local(
    task: Task, spec: TaskSpec, base_tensors: Mapping[str, torch.Tensor], data: Examples, *, seed: int
) -> dict[str, torch.Tensor]:
    """The trainable tensors after `task.train` from `base_tensors` on `data`, as fresh float32 copies.

    Deterministic in `seed` as far as the task's training is; the inputs are not modified.
    """
    if len(data) == 0:
        raise ValueError("cannot train on an empty data set")
    model = task.build_model(seed=0)  # architecture only; the base weights overwrite the init
    load_state(model, base_tensors)
    trained = task.train(model, data, TrainConfig(hyperparameters=spec.hyperparameters, seed=seed))
    update: dict[str, torch.Tensor] = {}
    for tensor in spec.tensors:
        if not tensor.trainable:
            continue
        if tensor.name not in trained or tuple(trained[tensor.name].shape) != tensor.shape:
            raise TaskError(f"task {task.name!r}: train() must return tensor {tensor.name!r} of shape {tensor.shape}")
        update[tensor.name] = trained[tensor.name].detach().to(torch.float32).clone()
    return update
