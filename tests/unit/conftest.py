"""Shared fixtures for the unit tests of the pure core (data, model, rules)."""

from __future__ import annotations

import pytest
import torch

from ledger.core.task import DataSplit
from ledger.tasks.digits import bundled_digits

# The model is tiny: a second thread only adds sync overhead (~2x slower on the 2-core machine).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def digits() -> DataSplit:
    """sklearn's digits as digits-mlp bundles them, split once per session (loading is the slow part)."""
    return bundled_digits()
