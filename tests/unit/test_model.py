"""Weights in and out of a module, and the digits-mlp model: seeded construction, strict loading, metrics."""

from __future__ import annotations

import hashlib

import pytest
import torch

from ledger.core.model import load_state, state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.task import Examples
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.training import classifier_metrics


def test_build_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    rng_before = torch.get_rng_state()

    first, again, other = (serialize_tensors(state_tensors(DIGITS_MLP.build_model(seed))) for seed in (0, 0, 1))

    assert first == again != other
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_digits_mlp_genesis_is_the_model_fedledger_started_with() -> None:
    # The SHA-256 that seed 0 gave before tasks existed (main @ 2a544af): same seed, same genesis.
    genesis = serialize_tensors(state_tensors(DIGITS_MLP.build_model(0)))

    assert hashlib.sha256(genesis).hexdigest() == "0658248970546211c1b19ea83e89e48108de29757ea34697d39637ad4e7e5573"


def test_load_state_refuses_wrong_names_and_shapes() -> None:
    model = DIGITS_MLP.build_model(0)
    tensors = state_tensors(model)

    with pytest.raises(ValueError, match=r"missing \['2\.bias'\]"):
        load_state(model, {name: t for name, t in tensors.items() if name != "2.bias"})
    with pytest.raises(ValueError, match="shape"):
        load_state(model, {**tensors, "2.bias": torch.zeros(11)})


def test_classifier_metrics_count_correct_predictions_and_keep_the_mode() -> None:
    model = DIGITS_MLP.build_model(0)
    x = torch.zeros(4, 64)
    predicted = int(model(x[:1]).argmax())
    y = torch.tensor([predicted, predicted, (predicted + 1) % 10, predicted])

    metrics = classifier_metrics(model, Examples(x, y))

    assert metrics["accuracy"] == 0.75
    expected_loss = torch.nn.functional.cross_entropy(model(x), y).item()
    assert metrics["loss"] == pytest.approx(expected_loss)
    assert model.training
