"""Canonical bytes for model tensors (safetensors) and metadata (JSON): the bytes that get hashed.

Same tensors in, same bytes out, on any run and in any insertion order, so `sha256sum` of a blob
matches the hash on chain. Tensors are stored as float32 only, sorted by name, with no
`__metadata__`. Reading never unpickles: bytes from other parties go through safetensors' parser
after a header check, and any problem surfaces as `MalformedArtifact`.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from typing import Any

import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

TENSOR_DTYPE = torch.float32
_SAFETENSORS_DTYPE = "F32"
_HEADER_LENGTH_BYTES = 8
# Our models need ~100 header bytes per tensor; a larger header is an attack or not our format.
MAX_HEADER_BYTES = 1 << 20


class MalformedArtifact(ValueError):
    """Bytes that are not a canonical-format tensor blob (not safetensors, truncated, bad header)."""


class UnsupportedDtype(MalformedArtifact):
    """A well-formed safetensors blob holding a tensor whose dtype is not float32."""


def serialize_tensors(tensors: Mapping[str, torch.Tensor]) -> bytes:
    """Canonical safetensors bytes: float32, contiguous CPU copies, sorted names, no metadata.

    Floating tensors of other precisions are converted to float32 (the project's one dtype);
    integer, bool and complex tensors are refused, since converting them would silently change
    what they mean. The inputs are never modified.
    """
    if not tensors:
        raise ValueError("refusing to serialize an empty tensor mapping")
    canonical: dict[str, torch.Tensor] = {}
    for name in sorted(tensors):
        if not isinstance(name, str) or not name:
            raise ValueError(f"tensor names must be non-empty strings, got {name!r}")
        tensor = tensors[name]
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"tensor {name!r} is a {type(tensor).__name__}, not a torch.Tensor")
        if not tensor.is_floating_point():
            raise TypeError(f"tensor {name!r} has dtype {tensor.dtype}; only floating tensors are stored")
        # clone(): safetensors refuses tensors that share storage; a private copy never does.
        canonical[name] = tensor.detach().to(device="cpu", dtype=TENSOR_DTYPE).contiguous().clone()
    return _safetensors_save(canonical, metadata=None)


def deserialize_tensors(data: bytes, *, max_bytes: int) -> dict[str, torch.Tensor]:
    """Tensors from untrusted safetensors bytes, without pickle; `MalformedArtifact` if not valid.

    The header is checked before safetensors parses it (size, JSON, float32 dtypes), so hostile
    headers cost nothing to refuse. Returns fresh, writable float32 tensors keyed by name.
    """
    if len(data) > max_bytes:
        raise MalformedArtifact(f"artifact is {len(data)} bytes, over the {max_bytes}-byte limit")
    header = _read_header(data)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or "dtype" not in entry:
            raise MalformedArtifact(f"header entry for {name!r} has no dtype")
        if entry["dtype"] != _SAFETENSORS_DTYPE:
            raise UnsupportedDtype(f"tensor {name!r} has dtype {entry['dtype']!r}; only F32 is accepted")
    try:
        tensors = _safetensors_load(bytes(data))
    except Exception as exc:  # the parser's own error types are not public API
        raise MalformedArtifact(f"not a valid safetensors blob: {exc}") from exc
    return {name: tensors[name] for name in sorted(tensors)}


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON with sorted keys and no whitespace, for metadata blobs that get hashed.

    NaN and infinities are refused (JSON has no spelling for them that every reader agrees on),
    and so are non-string keys, which JSON would silently turn into strings.
    """
    _check_json_value(value)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def _read_header(data: bytes) -> dict[str, Any]:
    """The safetensors JSON header, validated for size and shape before the real parser sees it."""
    if len(data) < _HEADER_LENGTH_BYTES:
        raise MalformedArtifact(f"artifact is {len(data)} bytes, too short for a safetensors header")
    (header_length,) = struct.unpack("<Q", bytes(data[:_HEADER_LENGTH_BYTES]))
    if header_length > MAX_HEADER_BYTES:
        raise MalformedArtifact(
            f"header claims {header_length} bytes, over the {MAX_HEADER_BYTES}-byte limit "
            "(not a safetensors blob? pickle and torch.save files are refused)"
        )
    end = _HEADER_LENGTH_BYTES + header_length
    if end > len(data):
        raise MalformedArtifact(f"header claims {header_length} bytes but the artifact is truncated")
    try:
        header = json.loads(
            bytes(data[_HEADER_LENGTH_BYTES:end]).decode("utf-8"), object_pairs_hook=_no_duplicates
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedArtifact(f"safetensors header is not valid JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedArtifact("safetensors header is not a JSON object")
    return header


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key could make two readers see different tensors."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in header: {sorted(keys)}")
    return dict(pairs)


def _check_json_value(value: Any) -> None:
    """Refuses what `json.dumps` would encode ambiguously (non-finite floats, non-string keys)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite float {value!r} cannot be canonical JSON")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object keys must be strings, got {key!r}")
            _check_json_value(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_value(item)
