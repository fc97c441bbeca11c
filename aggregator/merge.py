"""Merging a round's accepted updates one at a time, as verification hands them over.

`StreamingFedAvg` folds each update into float64 sums as soon as it is verified, so the
aggregator never holds more than one update's tensors, and gives the same bytes as
`ledger.aggregation.fedavg` (the reference, which auditors re-run): updates added in
(hash, num_samples) order, the same float64 operations element by element, one division and one
rounding to float32 at the end. Elementwise IEEE operations round the same way whatever the
chunking, so working in cache-sized chunks changes the speed, never the bytes. Other rules need
every update at once; `CollectedRule` keeps them and calls the pure rule at the end.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import torch

from ledger.core.aggregation import Update, Weights, aggregate, sample_weight

# 64 Ki float64 = 512 KiB per temporary: it stays in L2, so every pass reads memory once.
CHUNK_ELEMENTS = 1 << 16


def merge_key(update_hash: str, num_samples: int) -> tuple[str, int]:
    """The order every rule sees updates in (see `ledger.aggregation._ordered`)."""
    return (update_hash, num_samples)


class Merge(Protocol):
    """Takes a round's accepted updates in `merge_key` order; `result()` is the new weights."""

    # Whether `add` keeps the update's tensors (then they must stay valid until `result()`).
    keeps_updates: bool

    def add(self, update: Update) -> None: ...

    def result(self) -> Weights: ...


class StreamingFedAvg:
    """FedAvg over updates added one at a time, bit-identical to `ledger.aggregation.fedavg`.

    `template` (the round's base model) fixes the tensor names and shapes every update must have;
    `max_samples` caps each update's weight as `fedavg` does. The sums are this object's own
    state; the updates' tensors are only read, never kept.
    """

    keeps_updates = False

    def __init__(
        self,
        template: Mapping[str, torch.Tensor],
        *,
        max_samples: int | None = None,
        chunk_elements: int = CHUNK_ELEMENTS,
    ) -> None:
        if chunk_elements < 1:
            raise ValueError(f"chunk_elements must be positive, got {chunk_elements}")
        sample_weight(1, max_samples)  # refuses a bad cap now, not at the first update
        self._max_samples = max_samples
        self._shapes = {name: tuple(template[name].shape) for name in sorted(template)}
        self._sums = {name: np.zeros(shape, dtype=np.float64) for name, shape in self._shapes.items()}
        self._chunk = chunk_elements
        self._buffer = np.empty(chunk_elements, dtype=np.float64)
        self._total = 0
        self._last_key: tuple[str, int] | None = None

    def add(self, update: Update) -> None:
        """Adds `num_samples * tensors` to the sums; updates must come in `merge_key` order."""
        key = merge_key(update.update_hash, update.num_samples)
        if self._last_key is not None and key < self._last_key:
            raise ValueError(
                f"update {update.update_hash} added after {self._last_key[0]}: add updates in (hash, num_samples) "
                "order, the order fedavg sums them in"
            )
        shapes = {name: tuple(tensor.shape) for name, tensor in update.tensors.items()}
        if shapes != self._shapes:
            raise ValueError(
                f"update {update.update_hash} has different tensor names or shapes; validate updates first"
            )
        # The reference computes `sum += num_samples * float64(tensor)`: a float64 product rounded
        # once, then a float64 sum rounded once. These are the same two roundings, per element.
        weight = sample_weight(update.num_samples, self._max_samples)
        for name, sums in self._sums.items():
            values = update.tensors[name].detach().cpu().reshape(-1).numpy()
            flat_sums = sums.reshape(-1)
            for start in range(0, values.size, self._chunk):
                stop = min(start + self._chunk, values.size)
                product = self._buffer[: stop - start]
                np.multiply(values[start:stop], weight, out=product, dtype=np.float64)
                np.add(flat_sums[start:stop], product, out=flat_sums[start:stop])
        self._total += weight
        self._last_key = key

    def result(self) -> Weights:
        """Fresh float32 tensors sorted by name: sums / total samples, rounded to nearest once."""
        if self._last_key is None:
            raise ValueError("cannot aggregate an empty list of updates")
        return {
            name: torch.from_numpy(np.array(sums / self._total, dtype=np.float32, order="C"))
            for name, sums in self._sums.items()
        }


class CollectedRule:
    """Any registered rule: keeps the updates and runs the pure rule over all of them at the end
    (with the round's base, for the rules that work on changes from it)."""

    keeps_updates = True

    def __init__(self, rule: str, params: Mapping[str, Any], base: Mapping[str, torch.Tensor] | None = None) -> None:
        self._rule = rule
        self._params = dict(params)
        self._base = base
        self._updates: list[Update] = []

    def add(self, update: Update) -> None:
        self._updates.append(update)

    def result(self) -> Weights:
        return aggregate(self._rule, self._updates, base=self._base, **self._params)


def start_merge(rule: str, params: Mapping[str, Any], base: Mapping[str, torch.Tensor]) -> Merge:
    """Streaming FedAvg for `fedavg` (with at most its sample cap); any other rule goes through `aggregate`."""
    if rule == "fedavg" and set(params) <= {"max_samples"}:
        return StreamingFedAvg(base, max_samples=params.get("max_samples"))
    return CollectedRule(rule, params, base)
