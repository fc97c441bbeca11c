"""The one model every party trains and aggregates: a small MLP over 8x8 digit images.

Edge nodes, the aggregator and auditors all rebuild it from here, so tensor names and shapes
always agree. Weights travel as plain name → tensor mappings (see ledger.core.serialization).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

NUM_FEATURES = 64
HIDDEN_UNITS = 64
NUM_CLASSES = 10
MODEL_NAME = f"mlp-{NUM_FEATURES}-{HIDDEN_UNITS}-{NUM_CLASSES}"


def build_model(seed: int) -> nn.Module:
    """A freshly initialised model; the same seed always gives the same weights.

    Initialisation runs in a forked RNG so it neither depends on nor disturbs the caller's
    global torch RNG state.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Sequential(
            nn.Linear(NUM_FEATURES, HIDDEN_UNITS),
            nn.ReLU(),
            nn.Linear(HIDDEN_UNITS, NUM_CLASSES),
        )


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights as detached float32 copies sorted by name (safe to keep or serialize)."""
    state = model.state_dict()
    return {name: state[name].detach().to(torch.float32).clone() for name in sorted(state)}


def load_state(model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
    """Copies `tensors` into `model`, refusing any missing, unexpected or mis-shaped tensor."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(f"tensor names do not match the model: missing {missing}, unexpected {unexpected}")
    for name, target in expected.items():
        if tuple(tensors[name].shape) != tuple(target.shape):
            shape = tuple(tensors[name].shape)
            raise ValueError(f"tensor {name!r} has shape {shape}, the model needs {tuple(target.shape)}")
    model.load_state_dict(dict(tensors), strict=True)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of `x` whose predicted class equals `y`; leaves the model's train/eval mode as found."""
    if len(x) == 0:
        raise ValueError("cannot evaluate on an empty set")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            predictions = model(x).argmax(dim=1)
    finally:
        model.train(was_training)
    return float((predictions == y).sum().item()) / len(y)
