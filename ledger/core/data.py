"""The digits data set (sklearn's real 8x8 handwritten digits) and how it is split across nodes.

Loading is the only I/O (from files inside the sklearn package; no download). Everything else is a
pure function of the arrays and a seed. The held-out test split is ordered by SHA-256 of
(seed, index) rather than by an RNG, so an auditor gets the same test set on any numpy/torch
version; node shards use numpy's seeded Generator (they only shape local training, which
nobody re-runs).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch

_PIXEL_MAX = 16.0  # load_digits pixels are integers 0..16


@dataclass(frozen=True)
class Shard:
    """Samples held by one party: `x` float32 [n, 64] in [0, 1], `y` int64 [n] class labels."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class DigitsSplit:
    """The training pool that nodes share out, and the aggregator's held-out test set."""

    train: Shard
    test: Shard


def load_digits_split(*, test_fraction: float = 0.2, seed: int = 0) -> DigitsSplit:
    """Loads sklearn's digits and splits them, stratified by label, into train and test."""
    from sklearn.datasets import load_digits  # heavy import, only needed here

    digits = load_digits()
    images = np.asarray(digits.data)
    labels = np.asarray(digits.target)
    train_idx, test_idx = train_test_indices(labels, test_fraction=test_fraction, seed=seed)
    return DigitsSplit(
        train=to_shard(images[train_idx], labels[train_idx]),
        test=to_shard(images[test_idx], labels[test_idx]),
    )


def to_shard(images: np.ndarray, labels: np.ndarray) -> Shard:
    """Raw 0..16 pixel rows and labels as a float32 [0, 1] / int64 Shard (copies, inputs untouched)."""
    x = torch.tensor(np.asarray(images, dtype=np.float32) / np.float32(_PIXEL_MAX), dtype=torch.float32)
    y = torch.tensor(np.asarray(labels), dtype=torch.int64)
    if x.ndim != 2 or len(x) != len(y):
        raise ValueError(
            f"expected [n, features] images and [n] labels, got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return Shard(x=x, y=y)


def subset(shard: Shard, indices: np.ndarray) -> Shard:
    """The samples of `shard` at `indices`, as a new Shard."""
    index = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    return Shard(x=shard.x[index].clone(), y=shard.y[index].clone())


def train_test_indices(
    labels: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: per label, the `test_fraction` of samples first in hash order go to test."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    test: list[int] = []
    for label in np.unique(labels):
        members = _hash_order(np.flatnonzero(labels == label), seed=seed, purpose="test-split")
        test.extend(members[: math.floor(len(members) * test_fraction + 0.5)])
    test_idx = np.sort(np.asarray(test, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(len(labels), dtype=np.int64), test_idx)
    return train_idx, test_idx


def iid_partition(n_samples: int, n_nodes: int, *, seed: int) -> list[np.ndarray]:
    """Disjoint index sets covering range(n_samples), sizes differing by at most one."""
    _check_nodes(n_samples, n_nodes, min_samples=1)
    order = _hash_order(np.arange(n_samples, dtype=np.int64), seed=seed, purpose="iid")
    return [np.sort(chunk) for chunk in np.array_split(order, n_nodes)]


def dirichlet_partition(
    labels: np.ndarray, n_nodes: int, *, alpha: float, seed: int, min_samples: int = 10
) -> list[np.ndarray]:
    """Label-skewed disjoint index sets: each label's samples are shared by Dirichlet(alpha) weights.

    Small `alpha` gives each node few labels; large `alpha` tends to IID. Nodes left with fewer
    than `min_samples` are topped up, one sample at a time, from the currently largest shard, so
    every node can train and the result stays a pure function of the seed.
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be positive, got {alpha}")
    labels = np.asarray(labels)
    _check_nodes(len(labels), n_nodes, min_samples=min_samples)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(n_nodes)]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        weights = rng.dirichlet(np.full(n_nodes, alpha))
        cuts = (np.cumsum(weights)[:-1] * len(members)).astype(np.int64)
        for node, chunk in enumerate(np.split(members, cuts)):
            parts[node].extend(int(i) for i in chunk)
    while min(len(part) for part in parts) < min_samples:
        receiver = min(range(n_nodes), key=lambda node: len(parts[node]))
        donor = max(range(n_nodes), key=lambda node: len(parts[node]))
        parts[receiver].append(parts[donor].pop())
    return [np.sort(np.asarray(part, dtype=np.int64)) for part in parts]


def split_shards(
    train: Shard, n_nodes: int, *, iid: bool, alpha: float = 0.5, seed: int, min_samples: int = 10
) -> list[Shard]:
    """One Shard per node: `iid_partition` if `iid`, else `dirichlet_partition(alpha)` over labels."""
    if iid:
        partition = iid_partition(len(train), n_nodes, seed=seed)
    else:
        partition = dirichlet_partition(
            train.y.numpy(), n_nodes, alpha=alpha, seed=seed, min_samples=min_samples
        )
    return [subset(train, indices) for indices in partition]


def _hash_order(indices: np.ndarray, *, seed: int, purpose: str) -> np.ndarray:
    """`indices` shuffled by SHA-256 of (purpose, seed, index): same order on every platform."""
    keys = [hashlib.sha256(f"{purpose}:{seed}:{int(i)}".encode()).digest() for i in indices]
    return np.asarray(
        [int(indices[k]) for k in sorted(range(len(keys)), key=keys.__getitem__)], dtype=np.int64
    )


def _check_nodes(n_samples: int, n_nodes: int, *, min_samples: int) -> None:
    if n_nodes < 1:
        raise ValueError(f"n_nodes must be at least 1, got {n_nodes}")
    if n_nodes * min_samples > n_samples:
        raise ValueError(f"{n_samples} samples cannot give {n_nodes} nodes {min_samples} samples each")
