"""The digits tasks: sklearn's real 8x8 handwritten digits (bundled, no download), as an MLP and a CNN.

`digits-mlp` is the model fedledger started with: the same seed gives the same genesis weights and,
with the same data and hyperparameters, the same round models as before tasks existed.
`digits-cnn` is a small conv net over the same 64 pixels. Both read a node's data from an `.npz`
file holding `x` (float or int pixels 0..16, shape [n, 64]) and `y` (labels 0..9, shape [n]).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ledger.core.task import DataSplit, Examples
from ledger.tasks.files import checked_labelled, read_npz, write_npz
from ledger.tasks.partition import split_pool
from ledger.tasks.training import ClassifierTask

NUM_FEATURES = 64
NUM_CLASSES = 10
PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16
TEST_FRACTION = 0.2
SPLIT_SEED = 0


@lru_cache(maxsize=1)
def bundled_digits() -> DataSplit:
    """sklearn's digits as [0, 1] pixels: the node pool and the held-out 20% (stratified, hash-ordered)."""
    from sklearn.datasets import load_digits  # heavy import, only needed here

    digits = load_digits()
    every = digits_examples(np.asarray(digits.data), np.asarray(digits.target))
    train, test = split_pool(every, test_fraction=TEST_FRACTION, seed=SPLIT_SEED)
    return DataSplit(train=train, test=test)


def digits_examples(pixels: np.ndarray, labels: np.ndarray) -> Examples:
    """Raw 0..16 pixel rows and labels as float32 [0, 1] / int64 examples (copies, inputs untouched)."""
    x = torch.tensor(np.asarray(pixels, dtype=np.float32) / np.float32(PIXEL_MAX), dtype=torch.float32)
    return Examples(x=x, y=torch.tensor(np.asarray(labels), dtype=torch.int64))


class DigitsTask(ClassifierTask):
    """What the digits tasks share: the data and its files (SGD training and metrics come with the base)."""

    version = "1"

    def load_data(self, source: Path) -> Examples:
        arrays = read_npz(source, ("x", "y"))
        pixels, labels = checked_labelled(
            source, arrays["x"], arrays["y"], feature_shape=(NUM_FEATURES,), num_classes=NUM_CLASSES,
            value_range=(0.0, PIXEL_MAX),
        )  # fmt: skip
        return digits_examples(pixels, labels)

    def bundled_data(self) -> DataSplit:
        return bundled_digits()

    def save_data(self, data: Examples, destination: Path) -> None:
        # x * 16 is exact for the k/16 pixels of the bundled data: a file round-trips bit for bit.
        write_npz(destination, x=(data.x * PIXEL_MAX).numpy(), y=data.y.numpy())


class DigitsMLP(DigitsTask):
    """64 → 64 (ReLU) → 10: the first model fedledger federated."""

    name = "digits-mlp"

    def build_model(self, seed: int) -> nn.Module:
        # Initialisation runs in a forked RNG: it neither depends on nor disturbs the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(NUM_FEATURES, 64), nn.ReLU(), nn.Linear(64, NUM_CLASSES))


class DigitsCNN(DigitsTask):
    """Two 3x3 convolutions (16, 32 channels) over the 8x8 image, 2x2 max-pool, a linear classifier."""

    name = "digits-cnn"

    def build_model(self, seed: int) -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Unflatten(1, (1, 8, 8)),
                nn.Conv2d(1, 16, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, kernel_size=3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
                nn.Flatten(),
                nn.Linear(32 * 4 * 4, NUM_CLASSES),
            )


DIGITS_MLP = DigitsMLP()
DIGITS_CNN = DigitsCNN()
