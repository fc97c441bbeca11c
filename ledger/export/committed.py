"""The torch module of a committed version, and the held-out examples an export is checked on.

Genesis pins what the federation trains; the module is that model with the version's committed
weights loaded, so anything that takes a module (ONNX export, parity) works on any version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from ledger.core.errors import LedgerError
from ledger.core.metadata import GenesisRecord
from ledger.core.model import MODEL_NAME, build_model, load_state


class ModelUnavailable(LedgerError):
    """This build cannot rebuild the model genesis pins, or the weights do not fit it."""


@dataclass(frozen=True)
class HeldOut:
    """Labelled examples nobody trained on: `x` float32 [n, ...], `y` int64 [n]."""

    x: torch.Tensor
    y: torch.Tensor


def committed_module(genesis: GenesisRecord, tensors: Mapping[str, torch.Tensor]) -> nn.Module:
    """The pinned model with `tensors` (a committed version's weights) loaded, in eval mode."""
    if genesis.architecture != MODEL_NAME:
        raise ModelUnavailable(f"genesis pins the architecture {genesis.architecture!r}; this build rebuilds only {MODEL_NAME!r}")
    model = build_model(genesis.seed)
    try:
        load_state(model, tensors)
    except ValueError as exc:
        raise ModelUnavailable(f"the committed weights do not fit {genesis.architecture}: {exc}") from None
    return model.eval()


def held_out(genesis: GenesisRecord) -> HeldOut:
    """The aggregator's held-out split of the pinned task's data."""
    from ledger.core.data import load_digits_split

    test = load_digits_split().test
    return HeldOut(x=test.x, y=test.y)


def weight_names(genesis: GenesisRecord) -> tuple[str, ...]:
    """The names of the tensors every version's blob holds (the pinned model's `state_dict`), sorted."""
    if genesis.architecture != MODEL_NAME:
        raise ModelUnavailable(f"genesis pins the architecture {genesis.architecture!r}; this build rebuilds only {MODEL_NAME!r}")
    return tuple(sorted(build_model(genesis.seed).state_dict()))
