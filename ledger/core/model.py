"""Moving weights between a torch module and the name → tensor mappings that blobs hold.

Every party builds its task's model (`ledger.core.task.Task.build_model`) and loads committed
weights into it through here, so a version's blob and a module's `state_dict` always agree on
names and shapes. Weights travel as plain mappings (see ledger.core.serialization).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


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
