"""Canonical bytes for model tensors (safetensors): the bytes that get hashed.

Same tensors in, same bytes out, on any run and in any insertion order, so `sha256sum` of a blob
matches the hash on chain. Tensors are stored as float32 only, sorted by name, with no
`__metadata__`. Reading never unpickles: bytes from other parties go through safetensors' parser
after a header check, and any problem surfaces as `MalformedBlob`.
"""

from __future__ import annotations

import math
import struct
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as _safetensors_load
from safetensors.torch import save as _safetensors_save

from ledger.core.safe_json import UntrustedJsonError, parse_untrusted_json

TENSOR_DTYPE = torch.float32
_SAFETENSORS_DTYPE = "F32"
_HEADER_LENGTH_BYTES = 8
# Our models need ~100 header bytes per tensor; a larger header is an attack or not our format.
MAX_HEADER_BYTES = 1 << 20
_F32_BYTES = 4
_PLAIN_ENTRY_KEYS = frozenset({"dtype", "shape", "data_offsets"})
_QUIET_WRAP = threading.Lock()


class MalformedBlob(ValueError):
    """Bytes that are not a canonical-format tensor blob (not safetensors, truncated, bad header)."""


class UnsupportedDtype(MalformedBlob):
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


def deserialize_tensors(data: bytes | memoryview, *, max_bytes: int) -> dict[str, torch.Tensor]:
    """Tensors from untrusted safetensors bytes, without pickle; `MalformedBlob` if not valid.

    The header is checked before safetensors parses it (size, JSON, float32 dtypes), so hostile
    headers cost nothing to refuse. Returns fresh, writable float32 tensors keyed by name.
    """
    _checked_header(data, max_bytes)
    try:
        tensors = _safetensors_load(bytes(data))
    except Exception as exc:  # the parser's own error types are not public API
        raise MalformedBlob(f"not a valid safetensors blob: {exc}") from exc
    return {name: tensors[name] for name in sorted(tensors)}


def tensor_views(data: bytes | memoryview, *, max_bytes: int) -> dict[str, torch.Tensor]:
    """Tensors that read `data` in place, for callers that only read them (validation, merging).

    Accepts and refuses exactly what `deserialize_tensors` does, without copying 4 bytes per
    parameter: blobs in the plain layout our serializer writes (no metadata, entries of exactly
    dtype/shape/data_offsets, tensors tiling the body from byte 0 to the end with no gap or
    overlap) are checked here and viewed in place; that layout is one safetensors accepts, and any
    other blob goes through `deserialize_tensors` and safetensors' own parser. The tensors share
    memory with `data` (which they keep alive), bytes or a read-only buffer: never write to them.
    """
    header = _checked_header(data, max_bytes)
    views = _plain_layout_views(data, header)
    return views if views is not None else deserialize_tensors(data, max_bytes=max_bytes)


def _checked_header(data: bytes | memoryview, max_bytes: int) -> dict[str, Any]:
    """The header, after the size limit and the float32-only rule (cheap refusals before parsing)."""
    if len(data) > max_bytes:
        raise MalformedBlob(f"blob is {len(data)} bytes, over the {max_bytes}-byte limit")
    header = read_header(data)
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or "dtype" not in entry:
            raise MalformedBlob(f"header entry for {name!r} has no dtype")
        if entry["dtype"] != _SAFETENSORS_DTYPE:
            raise UnsupportedDtype(f"tensor {name!r} has dtype {entry['dtype']!r}; only F32 is accepted")
    return header


def _plain_layout_views(data: bytes | memoryview, header: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """Zero-copy tensors if the blob has the plain layout (see `tensor_views`), else None."""
    if sys.byteorder != "little" or data[_HEADER_LENGTH_BYTES : _HEADER_LENGTH_BYTES + 1] != b"{":
        return None
    if "__metadata__" in header:  # safetensors reads it as metadata, whatever it holds
        return None
    (header_length,) = struct.unpack("<Q", bytes(data[:_HEADER_LENGTH_BYTES]))
    body_start = _HEADER_LENGTH_BYTES + header_length
    spans = []
    for name, entry in header.items():
        if set(entry) != _PLAIN_ENTRY_KEYS:
            return None
        shape, offsets = entry["shape"], entry["data_offsets"]
        if not _naturals(shape) or not _naturals(offsets) or len(offsets) != 2:
            return None
        spans.append((offsets[0], offsets[1], name, tuple(shape)))
    position = 0
    for begin, end, _, shape in sorted(spans):
        if begin != position or end - begin != _F32_BYTES * math.prod(shape):
            return None
        position = end
    if body_start + position != len(data):
        return None
    views: dict[str, torch.Tensor] = {}
    for begin, end, name, shape in sorted(spans, key=lambda span: span[2]):
        count = (end - begin) // _F32_BYTES
        if count == 0:
            views[name] = torch.zeros(shape, dtype=TENSOR_DTYPE)
            continue
        array = np.frombuffer(data, dtype="<f4", count=count, offset=body_start + begin).reshape(shape)
        if not array.flags.aligned:
            return None
        # Read-only on purpose (the callers only read), which torch warns about. The lock: verifier
        # threads call this concurrently, and `catch_warnings` swaps process-wide state.
        with _QUIET_WRAP, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
            views[name] = torch.from_numpy(array)
    return views


def _naturals(value: Any) -> bool:
    """A JSON list of non-negative integers torch can size a tensor with (below 2**63; bool is an
    int subclass; JSON has no bools here). Anything else goes to safetensors' parser to refuse."""
    return isinstance(value, list) and all(type(item) is int and 0 <= item < 2**63 for item in value)


def read_header(data: bytes | memoryview) -> dict[str, Any]:
    """The safetensors JSON header, validated for size and shape before the real parser sees it."""
    if len(data) < _HEADER_LENGTH_BYTES:
        raise MalformedBlob(f"blob is {len(data)} bytes, too short for a safetensors header")
    (header_length,) = struct.unpack("<Q", bytes(data[:_HEADER_LENGTH_BYTES]))
    if header_length > MAX_HEADER_BYTES:
        raise MalformedBlob(
            f"header claims {header_length} bytes, over the {MAX_HEADER_BYTES}-byte limit "
            "(not a safetensors blob? pickle and torch.save files are refused)"
        )
    end = _HEADER_LENGTH_BYTES + header_length
    if end > len(data):
        raise MalformedBlob(f"header claims {header_length} bytes but the blob is truncated")
    try:
        header = parse_untrusted_json(bytes(data[_HEADER_LENGTH_BYTES:end]), object_pairs_hook=_no_duplicates)
    except UntrustedJsonError as exc:
        raise MalformedBlob(f"safetensors header is not acceptable JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedBlob("safetensors header is not a JSON object")
    return header


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """JSON object hook: a repeated key could make two readers see different tensors."""
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys in header: {sorted(keys)}")
    return dict(pairs)
