"""Checks an update against the round's base model before it may be aggregated.

Pure: bytes or tensors in, a verdict out. A refused update is a result (`Rejected` with the
`RejectReason` the chain records), not an exception, so the aggregator can record it and go on.
Checks run cheapest first, and the size limit is applied to the raw bytes before parsing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ledger.reasons import RejectReason
from ledger.serialization import MalformedArtifact, UnsupportedDtype, deserialize_tensors


@dataclass(frozen=True)
class Accepted:
    """The update may be aggregated; `update_norm` is its L2 distance from the base (for metrics)."""

    tensors: Mapping[str, torch.Tensor]
    update_norm: float


@dataclass(frozen=True)
class Rejected:
    """The update is refused for `reason`; `detail` says which tensor or value, for logs."""

    reason: RejectReason
    detail: str


Verdict = Accepted | Rejected


def validate_blob(
    data: bytes, base: Mapping[str, torch.Tensor], *, max_bytes: int, max_norm: float
) -> Verdict:
    """Size-checks and parses an update's bytes, then `validate_update`s the tensors."""
    if len(data) > max_bytes:
        return Rejected(RejectReason.TOO_LARGE, f"{len(data)} bytes, over the {max_bytes}-byte limit")
    try:
        tensors = deserialize_tensors(data, max_bytes=max_bytes)
    except UnsupportedDtype as exc:
        return Rejected(RejectReason.DTYPE_MISMATCH, str(exc))
    except MalformedArtifact as exc:
        return Rejected(RejectReason.MALFORMED, str(exc))
    return validate_update(tensors, base, max_norm=max_norm)


def validate_update(
    tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], *, max_norm: float
) -> Verdict:
    """Names, shapes, dtype (float32), finiteness, then the L2 norm of (update - base) <= max_norm."""
    if not max_norm > 0:  # also catches NaN, which would otherwise accept everything
        raise ValueError(f"max_norm must be positive (math.inf disables the bound), got {max_norm}")
    missing = sorted(set(base) - set(tensors))
    unexpected = sorted(set(tensors) - set(base))
    if missing or unexpected:
        return Rejected(RejectReason.NAME_MISMATCH, f"missing {missing}, unexpected {unexpected}")
    for name in sorted(base):
        if tuple(tensors[name].shape) != tuple(base[name].shape):
            shapes = f"{tuple(tensors[name].shape)}, base has {tuple(base[name].shape)}"
            return Rejected(RejectReason.SHAPE_MISMATCH, f"{name!r} has shape {shapes}")
    for name in sorted(base):
        if tensors[name].dtype != torch.float32:
            return Rejected(
                RejectReason.DTYPE_MISMATCH, f"{name!r} has dtype {tensors[name].dtype}, not float32"
            )
    for name in sorted(base):
        if not bool(torch.isfinite(tensors[name]).all()):
            return Rejected(RejectReason.NON_FINITE, f"{name!r} holds NaN or infinity")
    norm = update_norm(tensors, base)
    if norm > max_norm:
        return Rejected(
            RejectReason.NORM_TOO_LARGE, f"L2 norm of the change is {norm:.6g}, bound is {max_norm:.6g}"
        )
    return Accepted(tensors=tensors, update_norm=norm)


def update_norm(tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of (tensors - base) over all tensors, in float64 with a fixed summation order."""
    total = 0.0
    for name in sorted(base):
        difference = _as_float64(tensors[name]) - _as_float64(base[name])
        total += float(np.sum(difference * difference))
    return math.sqrt(total)


def _as_float64(tensor: torch.Tensor) -> np.ndarray:
    return np.array(tensor.detach().cpu().numpy(), dtype=np.float64)
