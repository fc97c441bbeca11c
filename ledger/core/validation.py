"""Checks an update against the round's base model before it may be aggregated.

The aggregator's intake runs these checks to decide, the auditor's re-derivation runs them again
under the policy pinned at genesis to re-check each inclusion and rejection: one definition of
"valid" for both, so it lives in the core.

Pure: bytes or tensors in, a verdict out. A refused update is a result (`Rejected` with the
`RejectReason` the chain records), not an exception, so the aggregator can record it and go on.
Checks run cheapest first, and the size limit is applied to the raw bytes before parsing. The
bytes are decoded in the federation's pinned encoding (`ledger.core.encoding`) and every check on
values (finite, norm bound) runs on the decoded update, the tensors the rule will merge.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ledger.core.reasons import RejectReason
from ledger.core.encoding import DecodeError, complete_with_base, decode_update

# 64 Ki float64 = 512 KiB per temporary: it stays in L2, so every pass reads the tensors once.
_CHUNK_ELEMENTS = 1 << 16


@dataclass(frozen=True)
class Accepted:
    """The update may be aggregated; `update_norm` is its L2 distance from the base (for metrics).

    From `validate_blob`, `tensors` are every tensor of the model (the base's own where the update
    does not carry one) and may be read-only views of the blob's bytes (no copy): read them, never
    write to them. `privacy` is the claim the blob carries, for the privacy check that follows.
    """

    tensors: Mapping[str, torch.Tensor]
    update_norm: float
    privacy: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Rejected:
    """The update is refused for `reason`; `detail` says which tensor or value, for logs."""

    reason: RejectReason
    detail: str


Verdict = Accepted | Rejected


def validate_blob(
    data: bytes | memoryview,
    base: Mapping[str, torch.Tensor],
    *,
    max_bytes: int,
    max_norm: float,
    encoding: str = "f32",
    names: Collection[str] | None = None,
) -> Verdict:
    """Size-checks and decodes an update's bytes (f32 in place, no copy), then `validate_update`s
    the decoded model: the travelling tensors `names` (default all), the base's for the rest."""
    try:
        decoded = decode_update(data, base, encoding, max_bytes=max_bytes, names=names)
    except DecodeError as exc:
        return Rejected(exc.reason, exc.detail)
    verdict = validate_update(complete_with_base(decoded.tensors, base), base, max_norm=max_norm)
    if isinstance(verdict, Accepted) and decoded.privacy is not None:
        return Accepted(verdict.tensors, verdict.update_norm, decoded.privacy)
    return verdict


def validate_update(
    tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor], *, max_norm: float
) -> Verdict:
    """Names, shapes, dtype (float32), finiteness, then 0 < L2 norm of (update - base) <= max_norm."""
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
    # One pass per tensor gives both verdicts: a NaN or infinity in the update makes its squared
    # change non-finite (float64 cannot overflow on float32 inputs), so the per-element
    # `isfinite` scan only runs to confirm a tensor that is already suspect.
    # Summed in the same order as `update_norm`, so both give the same value.
    squares = 0.0
    for name in sorted(base):
        part = squared_change(tensors[name], base[name])
        if not math.isfinite(part) and not bool(torch.isfinite(tensors[name]).all()):
            return Rejected(RejectReason.NON_FINITE, f"{name!r} holds NaN or infinity")
        squares += part
    norm = math.sqrt(squares)
    if norm == 0.0:  # bit for bit the base (up to signed zeros): a free-rider's "update"
        return Rejected(RejectReason.NO_CHANGE, "every tensor equals the base model's")
    if norm > max_norm:
        return Rejected(
            RejectReason.NORM_TOO_LARGE, f"L2 norm of the change is {norm:.6g}, bound is {max_norm:.6g}"
        )
    return Accepted(tensors=tensors, update_norm=norm)


def update_norm(tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> float:
    """L2 norm of (tensors - base) over all tensors, in float64 with a fixed summation order."""
    squares = 0.0
    for name in sorted(base):
        squares += squared_change(tensors[name], base[name])
    return math.sqrt(squares)


def squared_change(tensor: torch.Tensor, base_tensor: torch.Tensor) -> float:
    """Sum of (tensor - base)² in float64, chunk by chunk in a fixed order.

    Each chunk is widened to float64 before subtracting (so the difference is the reference's),
    squared in place in a buffer that stays in cache, and summed by numpy on one thread: the same
    value on every run and at any thread count, read in one pass over memory.
    """
    values = _flat_numpy(tensor)
    reference = _flat_numpy(base_tensor)
    buffer = np.empty(min(_CHUNK_ELEMENTS, values.size), dtype=np.float64)
    total = 0.0
    for start in range(0, values.size, _CHUNK_ELEMENTS):
        stop = min(start + _CHUNK_ELEMENTS, values.size)
        chunk = buffer[: stop - start]
        np.subtract(values[start:stop], reference[start:stop], out=chunk, dtype=np.float64)
        np.multiply(chunk, chunk, out=chunk)
        total += float(chunk.sum())
    return total


def _flat_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A flat numpy view of the tensor's values (a copy only if it is not contiguous); never written."""
    return tensor.detach().cpu().reshape(-1).numpy()
