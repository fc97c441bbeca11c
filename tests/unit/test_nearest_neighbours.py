"""NNM's neighbour sets found through bounded estimates equal the ones from ranking every pair by
its exactly rounded distance (the definition auditors re-derive by), on data built to make the
estimates' job hard: duplicates, near-ties one ulp apart, tiny and huge magnitudes, outliers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ledger.core.aggregation import nearest_neighbour_mixing


def _by_definition(rows: np.ndarray, byzantine: int) -> np.ndarray:
    """Every pairwise distance exactly rounded, each row's n - f nearest (ties: lower row), summed in row order."""
    count = rows.shape[0]
    distances = np.zeros((count, count))
    for i in range(count):
        for j in range(i + 1, count):
            distances[i, j] = distances[j, i] = math.fsum(((rows[i] - rows[j]) ** 2).tolist())
    keep = count - byzantine
    mixed = np.empty_like(rows)
    for i in range(count):
        nearest = sorted(sorted(range(count), key=lambda j: (float(distances[i, j]), j))[:keep])
        accumulator = np.zeros(rows.shape[1])
        for j in nearest:
            accumulator += rows[j]
        mixed[i] = accumulator / keep
    return mixed


def _near_ties(rng: np.random.Generator) -> np.ndarray:
    """Rows whose distances to row 0 differ in their last bits: every estimate is unsure."""
    base = rng.normal(size=40)
    rows = [base]
    for k in range(1, 24):
        row = base.copy()
        row[k % 40] += 1.0 + k * 2.0**-50  # distance ~1, apart by a few ulps
        rows.append(row)
    return np.array(rows)


CASES = {
    "gaussian": lambda rng: rng.normal(size=(30, 50)),
    "duplicates": lambda rng: np.repeat(rng.normal(size=(6, 20)), 5, axis=0),
    "near ties": _near_ties,
    "tiny": lambda rng: rng.normal(size=(20, 30)) * 1e-160,
    "huge": lambda rng: rng.normal(size=(20, 30)) * 1e150,
    "outliers": lambda rng: np.vstack([rng.normal(size=(18, 25)), rng.normal(size=(6, 25)) * 1e6]),
    "all equal": lambda rng: np.ones((12, 8)),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("byzantine", [1, 4])
def test_mixing_is_bit_for_bit_the_definition(case: str, byzantine: int) -> None:
    rows = CASES[case](np.random.default_rng(7))

    ours = nearest_neighbour_mixing(rows, byzantine)

    assert np.array_equal(ours, _by_definition(rows, byzantine)), case
