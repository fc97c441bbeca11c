"""`breast-cancer-logreg`: logistic regression on sklearn's breast-cancer table (bundled, no download).

Features are standardized inside the model by a frozen first layer holding the bundled training
pool's per-feature mean and standard deviation: the statistics are part of the genesis model (so
pinned on chain), never travel in updates, and any party evaluating a version standardizes alike.
A node's data is a CSV file: a header of the 30 feature names then `label` (0 malignant, 1 benign),
one row per sample.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType

import numpy as np
import torch
from torch import nn

from ledger.core.task import DataSplit, Examples
from ledger.tasks.files import checked_labelled, read_csv, write_csv
from ledger.tasks.partition import split_pool
from ledger.tasks.training import ClassifierTask

NUM_FEATURES = 30
NUM_CLASSES = 2
TEST_FRACTION = 0.2
SPLIT_SEED = 0
STANDARDIZE = "standardize."


class Standardize(nn.Module):
    """(x - mean) / std with fixed statistics, held as buffers so they are part of the weights."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


@lru_cache(maxsize=1)
def _bundled() -> tuple[DataSplit, tuple[str, ...]]:
    from sklearn.datasets import load_breast_cancer  # heavy import, only needed here

    table = load_breast_cancer()
    every = _examples(np.asarray(table.data, dtype=np.float64), np.asarray(table.target))
    train, test = split_pool(every, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    return DataSplit(train=train, test=test), tuple(str(name) for name in table.feature_names)


def _examples(features: np.ndarray, labels: np.ndarray) -> Examples:
    return Examples(
        x=torch.tensor(np.asarray(features, dtype=np.float32)), y=torch.tensor(np.asarray(labels), dtype=torch.int64)
    )


@lru_cache(maxsize=1)
def _statistics() -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and standard deviation of the bundled training pool (float64 sums, then float32)."""
    pool = _bundled()[0].train.x.numpy().astype(np.float64)
    mean, std = pool.mean(axis=0), pool.std(axis=0)
    std[std == 0] = 1.0
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class BreastCancerLogReg(ClassifierTask):
    """Frozen standardization, then one trainable linear layer: 30 features → 2 classes."""

    name = "breast-cancer-logreg"
    version = "1"
    hyperparameters = MappingProxyType({"epochs": 5, "batch_size": 16, "lr": 0.05})
    data_suffix = ".csv"

    def build_model(self, seed: int) -> nn.Module:
        mean, std = _statistics()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                OrderedDict(standardize=Standardize(mean, std), linear=nn.Linear(NUM_FEATURES, NUM_CLASSES))
            )

    def trainable(self, tensor_name: str) -> bool:
        return not tensor_name.startswith(STANDARDIZE)

    def columns(self) -> tuple[str, ...]:
        """The CSV header: the 30 feature names, then `label`."""
        return _bundled()[1] + ("label",)

    def load_data(self, source: Path) -> Examples:
        table = read_csv(source, self.columns())
        features, labels = checked_labelled(
            source, table[:, :NUM_FEATURES], table[:, NUM_FEATURES], feature_shape=(NUM_FEATURES,), num_classes=NUM_CLASSES
        )
        return _examples(features, labels)

    def bundled_data(self) -> DataSplit:
        return _bundled()[0]

    def save_data(self, data: Examples, destination: Path) -> None:
        table = np.column_stack([data.x.numpy().astype(np.float64), data.y.numpy().astype(np.float64)])
        write_csv(destination, self.columns(), table)


BREAST_CANCER_LOGREG = BreastCancerLogReg()
