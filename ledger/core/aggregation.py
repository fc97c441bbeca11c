"""Aggregation rules: pure, deterministic functions from a round's updates to the new weights.

Every rule orders the updates by hash first (so arrival order never matters), accumulates in
float64 with numpy (single-threaded, so the thread count cannot change the result) and returns
fresh float32 tensors sorted by name. Inputs are never modified. Same updates in, same bytes
out: that is what lets an auditor re-run a round and compare its hash with the chain's.
Updates are full model weights (see edge_node.training), not deltas.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ledger.core.hashing import is_sha256_hex


@dataclass(frozen=True)
class Update:
    """One validated update: its on-chain hash, the sample count it claims, and its weights."""

    update_hash: str
    num_samples: int
    tensors: Mapping[str, torch.Tensor]

    def __post_init__(self) -> None:
        if not is_sha256_hex(self.update_hash):
            raise ValueError(f"update_hash must be 64 lowercase hex characters, got {self.update_hash!r}")
        if type(self.num_samples) is not int or self.num_samples < 1:  # bool is an int subclass
            raise ValueError(f"num_samples must be a positive int, got {self.num_samples!r}")


Weights = dict[str, torch.Tensor]
Rule = Callable[..., Weights]


def sample_weight(num_samples: int, max_samples: int | None) -> int:
    """The weight an update's self-reported `num_samples` earns: capped at the federation's bound.

    Nothing on chain can prove a sample count, so the cap (pinned in the policy and in each
    round's rule parameters) is all that stops one node from outweighing all others.
    """
    if max_samples is None:
        return num_samples
    if type(max_samples) is not int or max_samples < 1:
        raise ValueError(f"max_samples must be a positive int, got {max_samples!r}")
    return min(num_samples, max_samples)


def fedavg(updates: Sequence[Update], *, max_samples: int | None = None) -> Weights:
    """Average of the weights, each update weighted by its `num_samples` (McMahan et al., 2017),
    capped at `max_samples` when given (see `sample_weight`)."""
    ordered = _ordered(updates)
    weights = [sample_weight(update.num_samples, max_samples) for update in ordered]
    total = sum(weights)
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        accumulator = np.zeros(tuple(ordered[0].tensors[name].shape), dtype=np.float64)
        for weight, update in zip(weights, ordered, strict=True):
            accumulator += weight * _as_float64(update.tensors[name])
        result[name] = accumulator / total
    return _as_weights(result)


def coordinate_median(updates: Sequence[Update]) -> Weights:
    """Per-coordinate median, unweighted; with an even count, the mean of the two middle values."""
    ordered = _ordered(updates)
    middle = len(ordered) // 2
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        values = np.sort(_stack(ordered, name), axis=0)
        if len(ordered) % 2:
            result[name] = values[middle]
        else:
            result[name] = (values[middle - 1] + values[middle]) / 2.0
    return _as_weights(result)


def trimmed_mean(updates: Sequence[Update], *, trim_ratio: float) -> Weights:
    """Per-coordinate mean, unweighted, after dropping the floor(trim_ratio * n) lowest and highest."""
    ordered = _ordered(updates)
    if not 0.0 <= trim_ratio < 0.5:
        raise ValueError(f"trim_ratio must be in [0, 0.5), got {trim_ratio}")
    cut = math.floor(trim_ratio * len(ordered))
    kept = len(ordered) - 2 * cut
    result: dict[str, np.ndarray] = {}
    for name in _names(ordered):
        values = np.sort(_stack(ordered, name), axis=0)
        accumulator = np.zeros(values.shape[1:], dtype=np.float64)
        for row in values[cut : cut + kept]:
            accumulator += row
        result[name] = accumulator / kept
    return _as_weights(result)


def krum(
    updates: Sequence[Update], *, num_byzantine: int, num_selected: int = 1, max_samples: int | None = None
) -> Weights:
    """Krum (Blanchard et al., 2017): the update closest to its n - f - 2 nearest neighbours.

    Each update's score is the sum of squared L2 distances to its n - f - 2 nearest others; the
    lowest score wins, ties going to the smaller update hash. With `num_selected` m > 1 this is
    Multi-Krum: the m best are combined by `fedavg` (sample weights capped at `max_samples`).
    Needs n >= 2f + 3 updates.
    """
    ordered = _ordered(updates)
    count = len(ordered)
    if num_byzantine < 0 or count < 2 * num_byzantine + 3:
        needed = 2 * num_byzantine + 3
        raise ValueError(
            f"Krum with num_byzantine={num_byzantine} needs at least {needed} updates, got {count}"
        )
    if not 1 <= num_selected <= count:
        raise ValueError(f"num_selected must be in [1, {count}], got {num_selected}")
    names = _names(ordered)
    flat = np.stack(
        [np.concatenate([_as_float64(u.tensors[name]).ravel() for name in names]) for u in ordered]
    )
    distances = np.zeros((count, count), dtype=np.float64)
    for i in range(count):
        for j in range(i + 1, count):
            difference = flat[i] - flat[j]
            distances[i, j] = distances[j, i] = float(np.sum(difference * difference))
    neighbours = count - num_byzantine - 2
    scores = [math.fsum(sorted(np.delete(distances[i], i))[:neighbours]) for i in range(count)]
    best = sorted(range(count), key=lambda i: (scores[i], i))[:num_selected]
    if num_selected == 1:
        return _as_weights({name: _as_float64(ordered[best[0]].tensors[name]) for name in names})
    return fedavg([ordered[i] for i in best], max_samples=max_samples)


RULES: dict[str, Rule] = {
    "fedavg": fedavg,
    "coordinate_median": coordinate_median,
    "trimmed_mean": trimmed_mean,
    "krum": krum,
}


def aggregate(rule_name: str, updates: Sequence[Update], **params: Any) -> Weights:
    """Runs the rule registered as `rule_name`; the name and params go in the round's metadata."""
    try:
        rule = RULES[rule_name]
    except KeyError:
        raise ValueError(f"unknown aggregation rule {rule_name!r}; known: {sorted(RULES)}") from None
    return rule(updates, **params)


def _ordered(updates: Sequence[Update]) -> list[Update]:
    """The updates sorted by (hash, num_samples), after checking they describe the same model."""
    if not updates:
        raise ValueError("cannot aggregate an empty list of updates")
    ordered = sorted(updates, key=lambda update: (update.update_hash, update.num_samples))
    reference = {name: tuple(tensor.shape) for name, tensor in ordered[0].tensors.items()}
    for update in ordered[1:]:
        shapes = {name: tuple(tensor.shape) for name, tensor in update.tensors.items()}
        if shapes != reference:
            raise ValueError(
                f"update {update.update_hash} has different tensor names or shapes; validate updates first"
            )
    return ordered


def _names(ordered: Sequence[Update]) -> list[str]:
    return sorted(ordered[0].tensors)


def _stack(ordered: Sequence[Update], name: str) -> np.ndarray:
    return np.stack([_as_float64(update.tensors[name]) for update in ordered])


def _as_float64(tensor: torch.Tensor) -> np.ndarray:
    """A float64 numpy copy: exact for float32 inputs, and never a view of the caller's tensor."""
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float64, copy=True)


def _as_weights(arrays: Mapping[str, np.ndarray]) -> Weights:
    """Fresh C-ordered float32 tensors sorted by name (float64 → float32 rounds to nearest even)."""
    return {
        name: torch.from_numpy(np.array(arrays[name], dtype=np.float32, order="C")) for name in sorted(arrays)
    }
