"""Demo-only misbehaving nodes, so the demo, tests and `fedledger bench robustness` can show the
aggregator catching them, or outlasting them.

Two kinds:
- tampering and malformed updates the intake rejects outright: `tamper_at_rest` alters the node's
  blob in the store's folder before the chain records its hash; `poison_transform` submits NaN
  weights in odd rounds and hugely scaled ones in even rounds;
- poisoning a registered node can do while staying inside every check (`ATTACKS`): sign-flipped
  or scaled updates just under the norm bound, training on flipped labels, a bounded step toward a
  label-flipped model every round, an inflated sample count, another node's hash, the base model
  itself. The robust default aggregation must keep accuracy ≥ 0.90 with 1 or 2 of 5 of these.

An `Attack` sees what the node sees in a round (`RoundView`) and says what to submit
(`Contribution`): weights to upload, or an existing blob's hash to submit as is. Attacks are
plain functions of that view (slow poisoning keeps its target between rounds), so the same code
drives an `EdgeNode` on a real chain and the benchmark's in-process rounds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import torch

from ledger.core.task import Examples
from ledger.core.task_spec import TaskSpec
from ledger.store.local import LocalBlobStore

POISON_SCALE = 1.0e4
INFLATED_SAMPLES = 10**12  # what the issue measured: FedAvg fell to 0.098 even with --max-norm 10
SLOW_STEP = 5.0  # L2 length of each slow-poisoning step: about twice an honest round-1 change
LABEL_FLIP_EPOCHS = 30  # how long slow poisoning trains its label-flipped target


def tamper_at_rest(blobs_dir: Path) -> Callable[[str, bytes], None]:
    """Once stored, flip one byte of the blob on disk, as an attacker with disk access would."""

    def tamper(update_hash: str, blob: bytes) -> None:
        path = LocalBlobStore(blobs_dir, max_bytes=len(blob) + 1).path_for(update_hash)
        altered = bytearray(blob)
        altered[-1] ^= 0xFF
        path.write_bytes(bytes(altered))

    return tamper


def poison_transform() -> Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]:
    calls = {"count": 0}

    def poison(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        calls["count"] += 1
        if calls["count"] % 2 == 1:
            first = sorted(weights)[0]
            poisoned = {name: tensor.clone() for name, tensor in weights.items()}
            poisoned[first].view(-1)[0] = float("nan")
            return poisoned
        return {name: tensor * POISON_SCALE for name, tensor in weights.items()}

    return poison


# ---------------------------------------------------------------------------------- attacks


@dataclass(frozen=True)
class RoundView:
    """What a node knows when it acts in a round."""

    round: int
    base_hash: str
    base: Mapping[str, torch.Tensor]  # the base's tensors that travel in updates (the task's trainable ones)
    shard: Examples
    train: Callable[[Examples, int | None], dict[str, torch.Tensor]]  # local training from the base (data, epochs)
    submitted: Callable[[], Sequence[tuple[str, int]]]  # (hash, num_samples) other nodes pinned so far


@dataclass(frozen=True)
class Contribution:
    """What the node submits: `weights` to upload, or `update_hash` of a blob already stored."""

    num_samples: int
    weights: dict[str, torch.Tensor] | None = None
    update_hash: str | None = None

    def __post_init__(self) -> None:
        if (self.weights is None) == (self.update_hash is None):
            raise ValueError("a contribution is either weights or an existing update hash")


class Attack(Protocol):
    def __call__(self, view: RoundView) -> Contribution: ...


def sign_flip(norm: float) -> Attack:
    """Train honestly, submit the opposite change scaled to `norm` (just under the bound)."""

    def attack(view: RoundView) -> Contribution:
        change = _change(view.train(view.shard, None), view.base)
        return Contribution(len(view.shard), weights=_moved(view.base, _scaled(change, -norm)))

    return attack


def scaling(norm: float) -> Attack:
    """Train honestly, submit the change scaled up to `norm` (model replacement, boosted)."""

    def attack(view: RoundView) -> Contribution:
        change = _change(view.train(view.shard, None), view.base)
        return Contribution(len(view.shard), weights=_moved(view.base, _scaled(change, norm)))

    return attack


def label_flip() -> Attack:
    """Train on the shard with its labels reversed (for digits, y becomes 9 - y; see `_flipped`)."""

    def attack(view: RoundView) -> Contribution:
        return Contribution(len(view.shard), weights=view.train(_flipped(view.shard), None))

    return attack


def slow_poison(step: float = SLOW_STEP) -> Attack:
    """Every round, a step of at most `step` toward one label-flipped model (trained once, long)."""
    target: dict[str, torch.Tensor] = {}

    def attack(view: RoundView) -> Contribution:
        if not target:
            target.update(view.train(_flipped(view.shard), LABEL_FLIP_EPOCHS))
        change = _change(target, view.base)
        length = float(torch.linalg.vector_norm(change))
        if length > step:
            change = _scaled(change, step)
        return Contribution(len(view.shard), weights=_moved(view.base, change))

    return attack


def inflated_samples(norm: float, samples: int = INFLATED_SAMPLES) -> Attack:
    """Sign-flip, and claim `samples` training samples so FedAvg weights it above everyone."""
    flip = sign_flip(norm)

    def attack(view: RoundView) -> Contribution:
        return Contribution(samples, weights=flip(view).weights)

    return attack


def copy_hash() -> Attack:
    """Submit another node's update hash (no training, no upload), claiming its own sample count.

    With nothing to copy yet, it free-rides instead.
    """

    def attack(view: RoundView) -> Contribution:
        others = view.submitted()
        chosen = others[0][0] if others else view.base_hash
        return Contribution(len(view.shard), update_hash=chosen)

    return attack


def free_rider() -> Attack:
    """Submit the base model's own hash: no training, no upload, a share of the credit.

    (Under a task with frozen tensors the base blob holds more tensors than an update may, so the
    intake refuses it as `name_mismatch` rather than `no_change`.)"""

    def attack(view: RoundView) -> Contribution:
        return Contribution(len(view.shard), update_hash=view.base_hash)

    return attack


def attack_named(name: str, *, max_norm: float) -> Attack:
    """A fresh attack by name; norm-bounded ones aim at 99 % of the federation's `max_norm`."""
    norm = 0.99 * max_norm
    factories: dict[str, Callable[[], Attack]] = {
        "sign_flip": lambda: sign_flip(norm),
        "label_flip": label_flip,
        "scaling": lambda: scaling(norm),
        "slow_poison": slow_poison,
        "inflated_samples": lambda: inflated_samples(norm),
        "copy_hash": copy_hash,
        "free_rider": free_rider,
    }
    try:
        return factories[name]()
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; known: {', '.join(ATTACKS)}") from None


ATTACKS = ("sign_flip", "label_flip", "scaling", "slow_poison", "inflated_samples", "copy_hash", "free_rider")


def with_epochs(spec: TaskSpec, epochs: int | None) -> TaskSpec:
    """The spec an attacker trains with when it asks for `epochs` (slow poisoning's long target run):
    `spec` with that `epochs` hyperparameter; `spec` itself for None or a task that has no `epochs`."""
    if epochs is None or "epochs" not in spec.hyperparameters:
        return spec
    return replace(spec, hyperparameters={**spec.hyperparameters, "epochs": epochs})


# ---------------------------------------------------------------------------------- helpers


def _flipped(shard: Examples) -> Examples:
    """The shard with the i-th smallest label it holds replaced by the i-th largest: y -> 9 - y on a
    digits shard holding all ten, 1 - y for two classes; needs no knowledge of the task."""
    labels = torch.unique(shard.y)  # sorted
    return Examples(x=shard.x, y=labels.flip(0)[torch.searchsorted(labels, shard.y)])


def _change(weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """weights - base, flattened over sorted names, in float64."""
    return torch.cat([(weights[n].double() - base[n].double()).reshape(-1) for n in sorted(base)])


def _scaled(change: torch.Tensor, length: float) -> torch.Tensor:
    """`change` rescaled to L2 length |length| (negative: the opposite direction)."""
    current = float(torch.linalg.vector_norm(change))
    if current == 0 or not math.isfinite(current):
        return change
    return change * (length / current)


def _moved(base: Mapping[str, torch.Tensor], change: torch.Tensor) -> dict[str, torch.Tensor]:
    """base + change as fresh float32 tensors, shaped like the base."""
    moved: dict[str, torch.Tensor] = {}
    offset = 0
    for name in sorted(base):
        size = base[name].numel()
        part = change[offset : offset + size].reshape(base[name].shape)
        moved[name] = (base[name].double() + part).to(torch.float32).contiguous()
        offset += size
    return moved
