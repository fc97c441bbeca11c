"""The digits split and node shares: disjoint, covering, stratified, and a pure function of the seed."""

from __future__ import annotations

import numpy as np
import pytest

from ledger.core.task import DataSplit
from ledger.tasks.partition import dirichlet_partition, iid_partition, split_examples, train_test_indices

DIGITS_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


def _labels() -> np.ndarray:
    return np.repeat(np.arange(10), DIGITS_CLASS_COUNTS)


def test_loaded_split_is_scaled_float32_with_a_stratified_test_set(digits: DataSplit) -> None:
    assert (len(digits.train), len(digits.test)) == (1438, 359)
    assert tuple(digits.train.x.shape) == (1438, 64)
    assert str(digits.train.x.dtype) == "torch.float32"
    assert float(digits.train.x.min()) == 0.0
    assert float(digits.train.x.max()) == 1.0
    assert np.bincount(digits.test.y.numpy()).tolist() == [36, 36, 35, 37, 36, 36, 36, 36, 35, 36]


def test_train_test_indices_are_disjoint_covering_and_seeded() -> None:
    train, test = train_test_indices(_labels(), test_fraction=0.2, seed=0)
    again, _ = train_test_indices(_labels(), test_fraction=0.2, seed=0)
    other, _ = train_test_indices(_labels(), test_fraction=0.2, seed=1)

    assert np.intersect1d(train, test).size == 0
    assert np.array_equal(np.union1d(train, test), np.arange(1797))
    assert np.array_equal(train, again)
    assert not np.array_equal(train, other)


def test_iid_shards_are_disjoint_equal_and_cover_the_train_split() -> None:
    parts = iid_partition(1438, 5, seed=0)

    assert [len(part) for part in parts] == [288, 288, 288, 287, 287]
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1438))


def test_split_examples_hands_each_node_its_rows(digits: DataSplit) -> None:
    shards = split_examples(digits.train, 5, iid=True, seed=0)
    parts = iid_partition(len(digits.train), 5, seed=0)

    for shard, part in zip(shards, parts, strict=True):
        assert np.array_equal(shard.x.numpy(), digits.train.x.numpy()[part])
        assert np.array_equal(shard.y.numpy(), digits.train.y.numpy()[part])


def test_dirichlet_shards_are_seeded_disjoint_covering_and_skewed() -> None:
    labels = _labels()

    parts = dirichlet_partition(labels, 10, alpha=0.1, seed=3)
    again = dirichlet_partition(labels, 10, alpha=0.1, seed=3)
    other = dirichlet_partition(labels, 10, alpha=0.1, seed=4)

    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other, strict=True))
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(len(labels)))
    assert min(len(np.unique(labels[part])) for part in parts) < 10


def test_dirichlet_tops_up_every_node_to_min_samples() -> None:
    parts = dirichlet_partition(_labels(), 50, alpha=0.01, seed=0, min_samples=20)

    assert min(len(part) for part in parts) >= 20
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(1797))


def test_split_examples_non_iid_uses_the_dirichlet_partition(digits: DataSplit) -> None:
    shards = split_examples(digits.train, 4, iid=False, alpha=0.3, seed=2)
    parts = dirichlet_partition(digits.train.y.numpy(), 4, alpha=0.3, seed=2)

    assert [len(shard) for shard in shards] == [len(part) for part in parts]


@pytest.mark.parametrize("n_nodes", [0, 200])
def test_impossible_node_counts_are_refused(n_nodes: int) -> None:
    with pytest.raises(ValueError, match=r"n_nodes must be at least 1|cannot give"):
        dirichlet_partition(_labels(), n_nodes, alpha=1.0, seed=0, min_samples=10)
