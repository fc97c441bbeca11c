"""The task interface: the model a federation trains, the data it trains on, and how it is judged.

A team federates its own model by writing one `Task`: the aggregator, the edge nodes and the
auditor all build the model, train and evaluate through it, and the task's spec (`TaskSpec`) is
pinned at genesis. The interface is pure; concrete tasks and their file loading live at the edge
(`ledger.tasks`, or a team's own package found through the `fedledger.tasks` entry points).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import ClassVar

import torch
from torch import nn

from ledger.core.errors import LedgerError
from ledger.core.task_spec import Hyperparameter
# Metrics every task's `evaluate` must report (more are welcome); the aggregator records them.
REQUIRED_METRICS = ("accuracy", "loss")


class TaskError(LedgerError):
    """A task that cannot be used as asked (unknown hyperparameter, bad metrics, bad model); one line."""


@dataclass(frozen=True)
class Examples:
    """A labelled data set: `x` float32 [n, *features], `y` int64 [n] class labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.y.ndim != 1 or self.x.ndim < 1 or len(self.x) != len(self.y):
            raise ValueError(f"expected [n, ...] inputs and [n] labels, got {tuple(self.x.shape)} and {tuple(self.y.shape)}")

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, indices: torch.Tensor) -> Examples:
        """The examples at `indices` (int64), as fresh tensors."""
        return Examples(x=self.x[indices].clone(), y=self.y[indices].clone())


@dataclass(frozen=True)
class DataSplit:
    """A task's bundled data: the pool nodes share out, and the aggregator's held-out test set."""

    train: Examples
    test: Examples


@dataclass(frozen=True)
class TrainConfig:
    """What one node's training run gets: the federation's hyperparameters and this run's seed."""

    hyperparameters: Mapping[str, Hyperparameter]
    seed: int
    # Called with n as epoch n (1-based) starts, for progress lines; a task's loop may ignore it.
    on_epoch: Callable[[int], None] | None = None


class Task(ABC):
    """What a federation trains. Subclass it, fill in the class attributes and the methods.

    `build_model(seed)` + loading a committed version's weights gives the global model as a torch
    module, so anything that takes a module (evaluation, export) works on any version. Every tensor
    in the model's `state_dict` travels in the genesis and global models; only the `trainable` ones
    travel in updates, and frozen ones are copied from the base, bit for bit.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    hyperparameters: ClassVar[Mapping[str, Hyperparameter]] = MappingProxyType({})
    # Which package's .py files make the task's code hash; None: the package of the task's class.
    code_package: ClassVar[str | None] = None
    # The file type `save_data` writes and `load_data` reads (`fedledger data split` names files so).
    data_suffix: ClassVar[str] = ".npz"

    @abstractmethod
    def build_model(self, seed: int) -> nn.Module:
        """The model, initialised from `seed`; the same seed gives the same weights on every run."""

    def trainable(self, tensor_name: str) -> bool:
        """Whether this `state_dict` tensor is trained and travels in updates (default: all are)."""
        return True

    @abstractmethod
    def train(self, model: nn.Module, data: Examples, config: TrainConfig) -> Mapping[str, torch.Tensor]:
        """Train `model` (holding the round's base weights) on a node's data; its weights after.

        Only the trainable tensors of the result are used. Deterministic in `config.seed`.
        """

    @abstractmethod
    def evaluate(self, model: nn.Module, data: Examples) -> Mapping[str, float]:
        """Metrics of `model` on `data`: name → number, at least `accuracy` and `loss`."""

    @abstractmethod
    def load_data(self, source: Path) -> Examples:
        """A node's data set from a file or folder it owns; `ledger.tasks.files.DataError` if unusable.

        Never unpickles: `np.load(..., allow_pickle=False)`, CSV, images, never `torch.load`.
        """

    def bundled_data(self) -> DataSplit:
        """The data set that ships with the task (for `fedledger data split`, the demo and tests)."""
        raise TaskError(f"task {self.name!r} bundles no data set: give nodes --data and the aggregator --test-data")

    def save_data(self, data: Examples, destination: Path) -> None:
        """Write `data` in the format `load_data` reads (`fedledger data split` uses it)."""
        raise TaskError(f"task {self.name!r} cannot write data files")

    def check_hyperparameters(self, hyperparameters: Mapping[str, Hyperparameter]) -> None:
        """Raise ValueError naming a value this task cannot train with, so it is refused before it
        is pinned at genesis (default: any value of the right type)."""

    def assets(self) -> Mapping[str, str]:
        """Inputs beyond the code that fix the model (e.g. pre-trained weights): name → SHA-256 hex."""
        return {}


def resolve_hyperparameters(task: Task, overrides: Mapping[str, object]) -> dict[str, Hyperparameter]:
    """The task's defaults with `overrides` applied; each override must name a default and keep its type.

    An int is accepted for a float hyperparameter (and becomes a float), so `lr=1` pins as 1.0.
    """
    resolved: dict[str, Hyperparameter] = dict(task.hyperparameters)
    for name, value in overrides.items():
        if name not in resolved:
            known = ", ".join(sorted(resolved)) or "none"
            raise TaskError(f"task {task.name!r} has no hyperparameter {name!r} (it has: {known})")
        resolved[name] = _coerced(task.name, name, resolved[name], value)
    try:
        task.check_hyperparameters(resolved)
    except ValueError as exc:
        raise TaskError(f"task {task.name!r}: {exc}") from None
    return resolved


def _coerced(task: str, name: str, default: Hyperparameter, value: object) -> Hyperparameter:
    expected = type(default)
    if expected is float and type(value) is int:
        value = float(value)
    if type(value) is not expected or (isinstance(value, float) and not math.isfinite(value)):
        raise TaskError(
            f"task {task!r}: hyperparameter {name!r} must be a finite {expected.__name__}, got {value!r}"
        )
    return value


def checked_metrics(task: Task, metrics: Mapping[str, float]) -> dict[str, float]:
    """`metrics` as plain floats, after checking the required ones are there and finite."""
    missing = [name for name in REQUIRED_METRICS if name not in metrics]
    if missing:
        raise TaskError(f"task {task.name!r}: evaluate() must report {missing}, got {sorted(metrics)}")
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        number = float(value)
        if not math.isfinite(number):
            raise TaskError(f"task {task.name!r}: metric {name!r} is {number}")
        checked[name] = number
    return checked
