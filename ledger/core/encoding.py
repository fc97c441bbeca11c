"""Update encodings: a node's trained tensors in, the bytes the chain pins out, and back.

A federation pins one encoding at genesis (`FederationPolicy.encoding`). An update is a set of
named tensors relative to the round's base model B: every tensor of the model, or only those a
task trains (the rest stay exactly B's). W is a travelling tensor as the node trained it, in
float32; D = f64(W) − f64(B).

  f32   each tensor as F32 W.                                    decode: W
  f16   each tensor as F16 D (round to nearest even).            decode: f32(f64(B) + f64(D16))
  int8  two tensors: "q" I8[Σ sizes] holds every tensor's q, row-major, tensors in sorted name
        order; "scale" F32[k], one scale per tensor in the same order. Per tensor:
        m = max|D|, s = f32(m / 127), q = clamp(round_half_even(D / s), −127, 127), q = 0 if s = 0.
                                                                 decode: f32(f64(B) + f64(q) · f64(s))

f16 carries the change, not the weights: f16's error is relative to the value it stores, and the
change shrinks round after round while the weights do not. int8 packs every tensor's values into
one tensor because safetensors spends ~100 header bytes per tensor, which on small models would
cost more than a quarter of the saving.

The decode is bit-identical on every IEEE-754 platform: f64(q) · f64(s) is exact (8 bits times a
24-bit significand fit in 53), f16 → f64 is exact, the f64 addition is correctly rounded and
f64 → f32 rounds to nearest even. Each step has one defined result, so numpy, torch or a hand
decoder get the same bits, fused multiply-add or not. The encoder is not audited (the chain pins
its output), so its rounding needs no such care.

The bytes: safetensors, tensors sorted by name, and at most one metadata entry, "fedledger" →
canonical JSON {"encoding": ..., "privacy": <the node's privacy claim>} (one key, because
safetensors writes its metadata map in an order that varies from run to run). A plain f32 update
with no claim has no metadata and is byte-identical to `serialize_tensors` of its tensors. Pure:
tensors and bytes in, tensors and bytes out.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load as _safetensors_load_numpy
from safetensors.torch import save as _safetensors_save

from ledger.core.policy import ENCODINGS
from ledger.core.reasons import RejectReason
from ledger.core.safe_json import UntrustedJsonError, canonical_json, parse_untrusted_json
from ledger.core.serialization import MalformedBlob, read_header, serialize_tensors, tensor_views

METADATA_KEY = "fedledger"
PACKED_VALUES = "q"
PACKED_SCALES = "scale"
INT8_LIMIT = 127
_METADATA_FIELDS = frozenset({"encoding", "privacy"})


class DecodeError(ValueError):
    """Bytes that are not an update in the pinned encoding; `reason` is what the chain records."""

    def __init__(self, reason: RejectReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedUpdate:
    """The travelling tensors as float32 weights, and the privacy claim the blob carries (if any).

    For `f32` blobs the tensors may be read-only views of the blob's bytes: read them only.
    """

    tensors: Mapping[str, torch.Tensor]
    privacy: Mapping[str, Any] | None


# --------------------------------------------------------------------------------- encoding


def encode_update(
    weights: Mapping[str, torch.Tensor],
    base: Mapping[str, torch.Tensor],
    encoding: str,
    *,
    privacy: Mapping[str, Any] | None = None,
) -> bytes:
    """The canonical bytes of `weights` (some or all of `base`'s tensors, trained) in `encoding`.

    `privacy`, the node's claim, travels in the metadata. Any values are encoded, NaN included:
    refusing bad updates is the aggregator's job, done on what it decodes.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; this build knows {list(ENCODINGS)}")
    names = _travelling(weights, base)
    if encoding == "f32" and privacy is None:
        return serialize_tensors(weights)
    stored: dict[str, torch.Tensor]
    if encoding == "f32":
        stored = {name: _float32(weights[name]).clone() for name in names}
    elif encoding == "f16":
        stored = {name: torch.from_numpy(_change(weights[name], base[name]).astype("<f2")) for name in names}
    else:
        quantized = [quantize_int8(_change(weights[name], base[name])) for name in names]
        stored = {
            PACKED_VALUES: torch.from_numpy(np.concatenate([q.reshape(-1) for q, _ in quantized])),
            PACKED_SCALES: torch.from_numpy(np.array([scale for _, scale in quantized], dtype="<f4")),
        }
    document: dict[str, Any] = {"encoding": encoding}
    if privacy is not None:
        document["privacy"] = dict(privacy)
    metadata = {METADATA_KEY: canonical_json(document).decode("utf-8")}
    return _safetensors_save({name: stored[name].contiguous() for name in sorted(stored)}, metadata=metadata)


def quantize_int8(change: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """(q, s) for one tensor's float64 change, by the formula in the module docstring.

    A non-finite change gives a non-finite scale and q = 0, which decodes to NaN or infinity:
    the aggregator then refuses the update as non-finite, like any other.
    """
    peak = float(np.max(np.abs(change))) if change.size else 0.0
    scale = np.float32(peak / INT8_LIMIT)
    if scale == 0 or not math.isfinite(scale):
        return np.zeros(change.shape, dtype=np.int8), scale
    q = np.clip(np.rint(change / np.float64(scale)), -INT8_LIMIT, INT8_LIMIT)
    return q.astype(np.int8), scale


# --------------------------------------------------------------------------------- decoding


def decode_update(
    data: bytes | memoryview,
    base: Mapping[str, torch.Tensor],
    encoding: str,
    *,
    max_bytes: int,
    names: Collection[str] | None = None,
) -> DecodedUpdate:
    """The update in `data`, decoded against `base`; `DecodeError` with the reason to record if not.

    `names` are the tensors that travel (a task's trainable ones; default every tensor of `base`):
    the blob must carry exactly those. The blob must state `encoding` (a blob without metadata
    states f32), and hold the dtypes and shapes that encoding stores.
    """
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown encoding {encoding!r}; this build knows {list(ENCODINGS)}")
    travelling = sorted(base) if names is None else sorted(names)
    unknown = sorted(set(travelling) - set(base))
    if unknown or not travelling:
        raise ValueError(f"the travelling tensors must be a non-empty subset of the base's; unknown: {unknown}")
    if len(data) > max_bytes:
        raise DecodeError(RejectReason.TOO_LARGE, f"{len(data)} bytes, over the {max_bytes}-byte limit")
    header = _header(data)
    stated, privacy = _metadata(header)
    if stated != encoding:
        raise DecodeError(
            RejectReason.ENCODING_MISMATCH, f"the blob is encoded {stated!r}; the federation pins {encoding!r}"
        )
    entries = {name: _entry(name, entry) for name, entry in header.items() if name != "__metadata__"}
    if encoding == "int8":
        return DecodedUpdate(_decode_int8(data, entries, base, travelling), privacy)
    dtype = "F32" if encoding == "f32" else "F16"
    for name, (stored, _) in sorted(entries.items()):
        if stored != dtype:
            raise DecodeError(RejectReason.DTYPE_MISMATCH, f"{name!r} is {stored}; the pinned encoding stores {dtype}")
    _expect_names(entries, travelling)
    for name in travelling:
        _expect(name, entries[name], dtype, tuple(base[name].shape))
    if encoding == "f32":
        try:
            return DecodedUpdate(tensor_views(data, max_bytes=max_bytes), privacy)
        except MalformedBlob as exc:
            raise DecodeError(RejectReason.MALFORMED, str(exc)) from None
    arrays = _load(data)
    return DecodedUpdate({name: add_change(base[name], arrays[name]) for name in travelling}, privacy)


def read_update_metadata(data: bytes | memoryview) -> tuple[str, Mapping[str, Any] | None]:
    """(the encoding a blob states, its privacy claim) from the header alone; `DecodeError` if unreadable."""
    return _metadata(_header(data))


def complete_with_base(
    tensors: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Every tensor of the model: the travelling ones decoded, the others the base's own (shared, not copied)."""
    return {name: tensors[name] if name in tensors else base[name] for name in sorted(base)}


def add_change(base_tensor: torch.Tensor, change: np.ndarray, scale: np.float32 | None = None) -> torch.Tensor:
    """f32(f64(B) + f64(change) · f64(scale)), or f32(f64(B) + f64(change)) without a scale: a fresh tensor."""
    widened = change.astype(np.float64)
    # A non-finite scale or change gives NaN or infinity here, which validation then refuses.
    with np.errstate(invalid="ignore", over="ignore"):
        if scale is not None:
            widened *= np.float64(scale)  # exact: q has 8 bits, the scale a 24-bit significand
        total = _float32(base_tensor).numpy().astype(np.float64) + widened
        return torch.from_numpy(np.ascontiguousarray(total.astype(np.float32)))


# --------------------------------------------------------------------------------- helpers


def _decode_int8(
    data: bytes | memoryview, entries: Mapping[str, tuple[str, tuple[int, ...]]], base: Mapping[str, torch.Tensor], travelling: list[str]
) -> dict[str, torch.Tensor]:
    if set(entries) != {PACKED_VALUES, PACKED_SCALES}:
        raise DecodeError(
            RejectReason.NAME_MISMATCH,
            f"an int8 update holds exactly {PACKED_VALUES!r} and {PACKED_SCALES!r}, got {sorted(entries)}",
        )
    sizes = [math.prod(base[name].shape) for name in travelling]
    _expect(PACKED_VALUES, entries[PACKED_VALUES], "I8", (sum(sizes),))
    _expect(PACKED_SCALES, entries[PACKED_SCALES], "F32", (len(travelling),))
    arrays = _load(data)
    values, scales = arrays[PACKED_VALUES], arrays[PACKED_SCALES]
    if (values == -INT8_LIMIT - 1).any():
        raise DecodeError(RejectReason.MALFORMED, f"int8 values lie in [-{INT8_LIMIT}, {INT8_LIMIT}]; the blob holds -128")
    if (scales < 0).any():
        raise DecodeError(RejectReason.MALFORMED, "an int8 scale is negative")
    decoded: dict[str, torch.Tensor] = {}
    start = 0
    for index, (name, size) in enumerate(zip(travelling, sizes)):
        q = values[start : start + size].reshape(tuple(base[name].shape))
        decoded[name] = add_change(base[name], q, scales[index])
        start += size
    return decoded


def _header(data: bytes | memoryview) -> dict[str, Any]:
    try:
        return read_header(data)
    except MalformedBlob as exc:
        raise DecodeError(RejectReason.MALFORMED, str(exc)) from None


def _metadata(header: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """(stated encoding, privacy claim); a blob without metadata states f32 and claims nothing."""
    raw = header.get("__metadata__")
    if raw is None:
        return "f32", None
    if not isinstance(raw, dict) or set(raw) != {METADATA_KEY} or not isinstance(raw[METADATA_KEY], str):
        raise DecodeError(RejectReason.MALFORMED, f"update metadata must be exactly one text entry {METADATA_KEY!r}")
    text = raw[METADATA_KEY]
    try:
        document = parse_untrusted_json(text)
    except UntrustedJsonError as exc:
        raise DecodeError(RejectReason.MALFORMED, f"update metadata is not usable JSON: {exc}") from None
    if not isinstance(document, dict) or not set(document) <= _METADATA_FIELDS or not isinstance(document.get("encoding"), str):
        raise DecodeError(
            RejectReason.MALFORMED, "update metadata must be an object with a string 'encoding' and an optional 'privacy'"
        )
    try:
        canonical = canonical_json(document).decode("utf-8") == text
    except ValueError:
        canonical = False
    if not canonical:
        raise DecodeError(RejectReason.MALFORMED, "update metadata is not canonical JSON (sorted keys, no spaces)")
    privacy = document.get("privacy")
    if privacy is not None and not isinstance(privacy, dict):
        raise DecodeError(RejectReason.MALFORMED, "the privacy claim must be an object")
    return document["encoding"], privacy


def _entry(name: str, entry: Any) -> tuple[str, tuple[int, ...]]:
    """(dtype, shape) of one header entry, checked before safetensors parses the blob."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        raise DecodeError(RejectReason.MALFORMED, f"header entry for {name!r} has no dtype")
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(size) is int and size >= 0 for size in shape):
        raise DecodeError(RejectReason.MALFORMED, f"header entry for {name!r} has no valid shape")
    return entry["dtype"], tuple(shape)


def _expect_names(entries: Mapping[str, Any], travelling: list[str]) -> None:
    missing = sorted(set(travelling) - set(entries))
    unexpected = sorted(set(entries) - set(travelling))
    if missing or unexpected:
        raise DecodeError(RejectReason.NAME_MISMATCH, f"missing {missing}, unexpected {unexpected}")


def _expect(name: str, entry: tuple[str, tuple[int, ...]], dtype: str, shape: tuple[int, ...]) -> None:
    if entry[0] != dtype:
        raise DecodeError(RejectReason.DTYPE_MISMATCH, f"{name!r} is {entry[0]}; the pinned encoding stores {dtype}")
    if entry[1] != shape:
        raise DecodeError(RejectReason.SHAPE_MISMATCH, f"{name!r} has shape {entry[1]}, expected {shape}")


def _load(data: bytes | memoryview) -> dict[str, np.ndarray]:
    try:
        return _safetensors_load_numpy(bytes(data))
    except Exception as exc:  # the parser's own error types are not public API
        raise DecodeError(RejectReason.MALFORMED, f"not a valid safetensors blob: {exc}") from None


def _travelling(weights: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]) -> list[str]:
    names = sorted(weights)
    unknown = sorted(set(names) - set(base))
    if not names or unknown:
        raise ValueError(f"an update carries a non-empty subset of the base's tensors; unknown: {unknown}")
    for name in names:
        if tuple(weights[name].shape) != tuple(base[name].shape):
            raise ValueError(f"{name!r} has shape {tuple(weights[name].shape)}, the base has {tuple(base[name].shape)}")
    return names


def _float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to(device="cpu", dtype=torch.float32)


def _change(weights: torch.Tensor, base_tensor: torch.Tensor) -> np.ndarray:
    """D = f64(W) − f64(B), a fresh float64 array."""
    return _float32(weights).numpy().astype(np.float64) - _float32(base_tensor).numpy().astype(np.float64)
