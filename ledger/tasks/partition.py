"""How a data set is split: held-out test set, and the shares of the nodes (IID or label-skewed).

Pure functions of the labels and a seed. The held-out test split is ordered by SHA-256 of
(seed, index) rather than by an RNG, so an auditor gets the same test set on any numpy/torch
version; node shards use numpy's seeded Generator (they only shape local training, which
nobody re-runs).
"""

from __future__ import annotations

import hashlib
import math

import numpy as np
import torch

from ledger.core.task import Examples


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


def split_examples(
    pool: Examples, n_nodes: int, *, iid: bool, alpha: float = 0.5, seed: int, min_samples: int = 10
) -> list[Examples]:
    """One share per node: `iid_partition` if `iid`, else `dirichlet_partition(alpha)` over labels."""
    if iid:
        partition = iid_partition(len(pool), n_nodes, seed=seed)
    else:
        partition = dirichlet_partition(pool.y.numpy(), n_nodes, alpha=alpha, seed=seed, min_samples=min_samples)
    return [pool.subset(torch.as_tensor(indices, dtype=torch.int64)) for indices in partition]


def split_pool(examples: Examples, *, test_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(train, test): the stratified `train_test_indices` split of `examples`."""
    train_idx, test_idx = train_test_indices(examples.y.numpy(), test_fraction=test_fraction, seed=seed)
    return examples.subset(torch.as_tensor(train_idx)), examples.subset(torch.as_tensor(test_idx))


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
