"""Training and judging a classifier: the loop, the metrics, and a task base class built on them.

`ClassifierTask` is what the built-in tasks and the `fedledger task new` template subclass: it
trains with minibatch SGD and reports accuracy and cross-entropy loss. Deterministic: the seed
drives a private generator for the batch order and nothing else is random (no dropout), so the
same inputs give the same bytes for a fixed torch build and thread count (CPU matmul results can
differ in the last bit across thread counts). The global RNG is never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

import torch
from torch import nn

from ledger.core.model import state_tensors
from ledger.core.task import Examples, Task, TrainConfig
from ledger.core.task_spec import Hyperparameter

# Heavy-ball momentum: a few local epochs then reach a useful model on small shards.
MOMENTUM = 0.9


def check_sgd(epochs: int, batch_size: int, lr: float) -> None:
    """The values minibatch SGD can run with; ValueError naming the first that it cannot."""
    for name, value, ok in (("epochs", epochs, epochs >= 1), ("batch_size", batch_size, batch_size >= 1), ("lr", lr, lr > 0)):
        if not ok:
            raise ValueError(f"hyperparameter {name!r} must be {'> 0' if name == 'lr' else '>= 1'}, got {value!r}")


def train_classifier(
    model: nn.Module,
    data: Examples,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    trainable: Callable[[str], bool] = lambda name: True,
    on_epoch: Callable[[int], None] | None = None,
) -> dict[str, torch.Tensor]:
    """`epochs` of minibatch SGD (momentum 0.9, cross-entropy) on `data`; the model's weights after.

    Parameters for which `trainable(name)` is false are frozen (no gradient, never stepped).
    """
    check_sgd(epochs, batch_size, lr)
    if len(data) == 0:
        raise ValueError("cannot train on an empty data set")
    parameters = []
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(trainable(name))
        if trainable(name):
            parameters.append(parameter)
    model.train()
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    with torch.enable_grad():  # even when called under no_grad
        for epoch in range(epochs):
            if on_epoch is not None:
                on_epoch(epoch + 1)
            order = torch.randperm(len(data), generator=generator)
            for batch in torch.split(order, batch_size):
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(data.x[batch]), data.y[batch])
                loss.backward()
                optimizer.step()
    return state_tensors(model)


def classifier_metrics(model: nn.Module, data: Examples) -> dict[str, float]:
    """`accuracy` (fraction predicted right) and mean cross-entropy `loss`; the model's mode is restored."""
    if len(data) == 0:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(data.x)
            loss = nn.functional.cross_entropy(logits, data.y)
            predictions = logits.argmax(dim=1)
    finally:
        model.train(was_training)
    return {"accuracy": float((predictions == data.y).sum().item()) / len(data.y), "loss": float(loss.item())}


class ClassifierTask(Task):
    """A task whose model maps inputs to class logits: SGD training, accuracy and loss.

    Subclasses give `name`, `version`, `build_model` and the data methods; they may change the
    default `hyperparameters` (keeping `epochs`, `batch_size`, `lr`) and `trainable`.
    """

    hyperparameters = MappingProxyType({"epochs": 5, "batch_size": 32, "lr": 0.05})

    def check_hyperparameters(self, hyperparameters: Mapping[str, Hyperparameter]) -> None:
        check_sgd(int(hyperparameters["epochs"]), int(hyperparameters["batch_size"]), float(hyperparameters["lr"]))

    def train(self, model: nn.Module, data: Examples, config: TrainConfig) -> Mapping[str, torch.Tensor]:
        h = config.hyperparameters
        return train_classifier(
            model,
            data,
            epochs=int(h["epochs"]),
            batch_size=int(h["batch_size"]),
            lr=float(h["lr"]),
            seed=config.seed,
            trainable=self.trainable,
            on_epoch=config.on_epoch,
        )

    def evaluate(self, model: nn.Module, data: Examples) -> Mapping[str, float]:
        return classifier_metrics(model, data)
