"""The shared model: seeded construction, strict loading, accuracy."""

from __future__ import annotations

import pytest
import torch

from ledger.core.model import build_model, evaluate, load_state, state_tensors
from ledger.core.serialization import serialize_tensors


def test_build_model_is_seeded_and_leaves_the_global_rng_alone() -> None:
    rng_before = torch.get_rng_state()

    first, again, other = (serialize_tensors(state_tensors(build_model(seed))) for seed in (0, 0, 1))

    assert first == again != other
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_load_state_refuses_wrong_names_and_shapes() -> None:
    model = build_model(0)
    tensors = state_tensors(model)

    with pytest.raises(ValueError, match=r"missing \['2\.bias'\]"):
        load_state(model, {name: t for name, t in tensors.items() if name != "2.bias"})
    with pytest.raises(ValueError, match="shape"):
        load_state(model, {**tensors, "2.bias": torch.zeros(11)})


def test_evaluate_counts_correct_predictions_and_keeps_the_mode() -> None:
    model = build_model(0)
    x = torch.zeros(4, 64)
    predicted = int(model(x[:1]).argmax())
    y = torch.tensor([predicted, predicted, (predicted + 1) % 10, predicted])

    accuracy = evaluate(model, x, y)

    assert accuracy == 0.75
    assert model.training
