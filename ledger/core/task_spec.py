"""A task's spec, pinned at genesis: name, version, code hash, hyperparameters, tensor manifest, assets.

Every party computes the spec of the task it runs and compares it with the one the genesis
metadata pins, so nobody trains, merges or judges with another model, other code or other
hyperparameters than the federation agreed on; a difference is refused naming its field. The
manifest (each tensor's name, shape, dtype, and whether it is trainable) is what updates are
validated against (`ledger.core.manifest`): only trainable tensors travel, frozen ones are copied
from the base. Pure and torch-free: values in, JSON-ready values out, and back with validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ledger.core.errors import LedgerError
from ledger.core.hashing import is_sha256_hex, sha256_hex
from ledger.core.safe_json import canonical_json

TENSOR_DTYPE = "float32"  # the one dtype blobs hold (see ledger.core.serialization)
# What a hyperparameter may be: a JSON scalar, so it pins in the genesis metadata as it is.
Hyperparameter = bool | int | float | str


class TaskSpecError(ValueError):
    """A spec document with a missing or ill-typed field; the message names the field."""


@dataclass(frozen=True)
class TensorSpec:
    """One `state_dict` tensor of the task's model; `trainable` ones travel in updates."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    trainable: bool


@dataclass(frozen=True)
class TaskSpec:
    """Everything about the task a federation pins; `spec_hash` names it in round metadata."""

    name: str
    version: str
    code_sha256: str
    hyperparameters: Mapping[str, Hyperparameter]
    tensors: tuple[TensorSpec, ...]  # sorted by name
    assets: Mapping[str, str] = field(default_factory=dict)

    @property
    def trainable_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tensors if t.trainable)

    @property
    def spec_hash(self) -> str:
        return sha256_hex(canonical_json(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "code_sha256": self.code_sha256,
            "hyperparameters": dict(self.hyperparameters),
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.dtype, "trainable": t.trainable} for t in self.tensors
            ],
            "assets": dict(self.assets),
        }

    @classmethod
    def from_json(cls, document: object) -> TaskSpec:
        """The spec in `document`; `TaskSpecError` naming the field at fault for anything else."""
        if not isinstance(document, Mapping):
            raise TaskSpecError("'task' must be an object")
        name, version, code = document.get("name"), document.get("version"), document.get("code_sha256")
        if not isinstance(name, str) or not name:
            raise TaskSpecError("'task.name' must be a non-empty string")
        if not isinstance(version, str):
            raise TaskSpecError("'task.version' must be a string")
        if not is_sha256_hex(code):
            raise TaskSpecError("'task.code_sha256' must be a SHA-256 hex digest")
        hyperparameters = document.get("hyperparameters")
        if not isinstance(hyperparameters, Mapping) or not all(_scalar(v) for v in hyperparameters.values()):
            raise TaskSpecError("'task.hyperparameters' must be an object of finite JSON scalars")
        assets = document.get("assets")
        if not isinstance(assets, Mapping) or not all(is_sha256_hex(v) for v in assets.values()):
            raise TaskSpecError("'task.assets' must be an object of SHA-256 hex digests")
        return cls(
            name=name,
            version=version,
            code_sha256=code,
            hyperparameters=dict(hyperparameters),
            tensors=_tensors(document.get("tensors")),
            assets=dict(assets),
        )


def _scalar(value: object) -> bool:
    return type(value) in (bool, int, str) or (isinstance(value, float) and math.isfinite(value))


def _tensors(items: object) -> tuple[TensorSpec, ...]:
    if not isinstance(items, list) or not items:
        raise TaskSpecError("'task.tensors' must be a non-empty list")
    tensors = []
    for index, item in enumerate(items):
        shape = item.get("shape") if isinstance(item, Mapping) else None
        if not (
            isinstance(item, Mapping)
            and isinstance(item.get("name"), str)
            and item["name"]
            and isinstance(shape, list)
            and all(type(n) is int and n >= 0 for n in shape)
            and item.get("dtype") == TENSOR_DTYPE
            and type(item.get("trainable")) is bool
        ):
            raise TaskSpecError(
                f"'task.tensors[{index}]' must have a 'name', a 'shape' of naturals, dtype {TENSOR_DTYPE!r} "
                "and a boolean 'trainable'"
            )
        tensors.append(TensorSpec(item["name"], tuple(shape), TENSOR_DTYPE, item["trainable"]))
    names = [t.name for t in tensors]
    if names != sorted(set(names)):
        raise TaskSpecError("'task.tensors' must be sorted by name, each name once")
    if not any(t.trainable for t in tensors):
        raise TaskSpecError("'task.tensors' must mark at least one tensor trainable")
    return tuple(tensors)


# --------------------------------------------------------------------------- comparing


@dataclass(frozen=True)
class SpecDifference:
    """The first field where two specs differ, with both values (None: absent on that side)."""

    field: str
    pinned: Any
    local: Any


def first_difference(pinned: TaskSpec, local: TaskSpec) -> SpecDifference | None:
    """Where `local` first departs from `pinned`, in a fixed order of fields; None if they are equal."""
    for name in ("name", "version", "code_sha256"):
        if getattr(pinned, name) != getattr(local, name):
            return SpecDifference(f"task.{name}", getattr(pinned, name), getattr(local, name))
    key = _first_changed_key(pinned.hyperparameters, local.hyperparameters)
    if key is not None:
        return SpecDifference(f"task.hyperparameters.{key}", pinned.hyperparameters.get(key), local.hyperparameters.get(key))
    ours, theirs = _by_name(pinned), _by_name(local)
    key = _first_changed_key(ours, theirs)
    if key is not None:
        return _tensor_difference(key, ours.get(key), theirs.get(key))
    key = _first_changed_key(pinned.assets, local.assets)
    if key is not None:
        return SpecDifference(f"task.assets.{key}", pinned.assets.get(key), local.assets.get(key))
    return None


def _first_changed_key(pinned: Mapping[str, Any], local: Mapping[str, Any]) -> str | None:
    """The first key (in sorted order) present on one side only, or mapped to different values.

    Values are compared with their types, so True and 1 (equal in Python) differ, as in JSON.
    """
    for key in sorted(set(pinned) | set(local)):
        if key not in pinned or key not in local or type(pinned[key]) is not type(local[key]) or pinned[key] != local[key]:
            return key
    return None


def _by_name(spec: TaskSpec) -> dict[str, TensorSpec]:
    return {t.name: t for t in spec.tensors}


def _tensor_difference(name: str, pinned: TensorSpec | None, local: TensorSpec | None) -> SpecDifference:
    if pinned is None or local is None:
        return SpecDifference(f"task.tensors.{name}", "present" if pinned else "absent", "present" if local else "absent")
    for attribute in ("shape", "dtype", "trainable"):
        if getattr(pinned, attribute) != getattr(local, attribute):
            return SpecDifference(f"task.tensors.{name}.{attribute}", getattr(pinned, attribute), getattr(local, attribute))
    raise AssertionError(f"tensor {name!r} compared different but no attribute differs")


class TaskSpecMismatch(LedgerError):
    """A party's own task spec differs from the federation's pinned one: it refuses to take part."""

    def __init__(self, role: str, difference: SpecDifference) -> None:
        self.role = role
        self.difference = difference
        super().__init__(
            f"refusing to join: this {role}'s task differs from the one pinned at genesis at "
            f"{difference.field} (pinned {difference.pinned!r}, this {role} has {difference.local!r})"
        )


def check_spec(role: str, pinned: TaskSpec, local: TaskSpec) -> None:
    """Raises `TaskSpecMismatch` naming the first differing field, if any."""
    difference = first_difference(pinned, local)
    if difference is not None:
        raise TaskSpecMismatch(role, difference)
