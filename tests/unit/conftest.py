"""Shared fixtures for the unit tests of the pure core (data, model, rules)."""

from __future__ import annotations

import pytest
import torch

from ledger.core.data import DigitsSplit, load_digits_split

# The model is tiny: a second thread only adds sync overhead (~2x slower on the 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> DigitsSplit:
    """sklearn's digits, split once per session (loading is the slow part)."""
    return load_digits_split(test_fraction=0.2, seed=0)
