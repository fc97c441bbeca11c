"""The tensor manifest at work: a model's manifest, checking weights against it, splitting off frozen tensors.

Updates carry only the trainable tensors the pinned manifest names; the aggregator validates and
merges them against the base's trainable part, and every party rebuilds a full model by copying
the frozen tensors from the base, bit for bit (`with_frozen`). Pure: tensors in, tensors out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

from ledger.core.task_spec import TENSOR_DTYPE, TaskSpec, TensorSpec


def tensor_manifest(state: Mapping[str, torch.Tensor], trainable: Callable[[str], bool]) -> tuple[TensorSpec, ...]:
    """The manifest of a model's `state_dict`; refuses tensors blobs cannot hold (not float32)."""
    manifest = []
    for name in sorted(state):
        tensor = state[name]
        if tensor.dtype != torch.float32:
            raise ValueError(
                f"tensor {name!r} has dtype {tensor.dtype}; models are stored as {TENSOR_DTYPE} only "
                "(build the model in float32, without integer buffers such as BatchNorm's counter)"
            )
        manifest.append(TensorSpec(name, tuple(tensor.shape), TENSOR_DTYPE, bool(trainable(name))))
    if not any(t.trainable for t in manifest):
        raise ValueError("the model has no trainable tensor")
    return tuple(manifest)


def manifest_mismatch(spec: TaskSpec, tensors: Mapping[str, torch.Tensor]) -> str | None:
    """Why a full model's tensors do not fit the manifest (names, shapes, float32), or None."""
    expected = {t.name: t.shape for t in spec.tensors}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        return f"tensor names differ from the manifest: missing {missing}, unexpected {unexpected}"
    for name, shape in expected.items():
        if tuple(tensors[name].shape) != shape:
            return f"tensor {name!r} has shape {tuple(tensors[name].shape)}, the manifest says {shape}"
        if tensors[name].dtype != torch.float32:
            return f"tensor {name!r} has dtype {tensors[name].dtype}, the manifest says {TENSOR_DTYPE}"
    return None


def trainable_part(weights: Mapping[str, torch.Tensor], spec: TaskSpec) -> dict[str, torch.Tensor]:
    """The trainable tensors of `weights` (the same tensor objects, not copies), sorted by name."""
    missing = [name for name in spec.trainable_names if name not in weights]
    if missing:
        raise ValueError(f"the weights lack trainable tensors {missing}")
    return {name: weights[name] for name in spec.trainable_names}


def with_frozen(trainable: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], spec: TaskSpec) -> dict[str, torch.Tensor]:
    """A full model: the `trainable` tensors as given, every frozen tensor copied from `base` bit for bit.

    Inputs are not modified; frozen tensors are fresh copies, sorted by name with the rest.
    """
    if sorted(trainable) != list(spec.trainable_names):
        raise ValueError(f"expected exactly the trainable tensors {list(spec.trainable_names)}, got {sorted(trainable)}")
    return {
        t.name: trainable[t.name] if t.trainable else base[t.name].detach().clone() for t in spec.tensors
    }
