"""Canonical tensor bytes: stable across runs and insertion order, and safe to read from strangers."""

from __future__ import annotations

import io
import json
import pickle
import struct

import numpy as np
import pytest
import torch
from safetensors.torch import save as raw_safetensors_save

from ledger.core.hashing import sha256_hex
from ledger.core.safe_json import canonical_json
from ledger.core.serialization import (
    MAX_HEADER_BYTES,
    MalformedBlob,
    UnsupportedDtype,
    deserialize_tensors,
    serialize_tensors,
    tensor_views,
)

LIMIT = 1 << 20


def test_bytes_are_exactly_the_documented_layout() -> None:
    # Prepare: what the format says the bytes must be (header padded with spaces to 8 bytes).
    header = b'{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
    header += b" " * (-len(header) % 8)
    expected = struct.pack("<Q", len(header)) + header + struct.pack("<2f", 1.0, 2.0)

    # Execute
    data = serialize_tensors({"a": torch.tensor([1.0, 2.0])})

    # Assert
    assert data == expected


def test_bytes_identical_regardless_of_insertion_order() -> None:
    weight = torch.arange(6, dtype=torch.float32).reshape(2, 3)
    bias = torch.tensor([0.5, -0.25])

    first = serialize_tensors({"weight": weight, "bias": bias})
    second = serialize_tensors({"bias": bias.clone(), "weight": weight.clone()})

    assert first == second
    assert sha256_hex(first) == sha256_hex(second)


def test_round_trip_keeps_names_shapes_and_values() -> None:
    tensors = {
        "layer.1.weight": torch.randn(4, 3, generator=torch.Generator().manual_seed(1)),
        "scalar": torch.tensor(2.5),
    }

    restored = deserialize_tensors(serialize_tensors(tensors), max_bytes=LIMIT)

    assert list(restored) == ["layer.1.weight", "scalar"]
    assert all(torch.equal(restored[name], tensors[name]) for name in tensors)
    assert restored["scalar"].shape == torch.Size([])


def test_other_float_dtypes_become_float32_and_inputs_stay_untouched() -> None:
    original = torch.tensor([0.1, 0.2], dtype=torch.float64)

    restored = deserialize_tensors(serialize_tensors({"x": original}), max_bytes=LIMIT)

    assert restored["x"].dtype == torch.float32
    assert torch.equal(restored["x"], original.to(torch.float32))
    assert original.dtype == torch.float64


@pytest.mark.parametrize("tensor", [torch.tensor([1, 2]), torch.tensor([True]), torch.tensor([1j])])
def test_non_floating_tensors_are_refused(tensor: torch.Tensor) -> None:
    with pytest.raises(TypeError, match="only floating tensors"):
        serialize_tensors({"x": tensor})


def test_views_and_shared_storage_serialize_like_plain_copies() -> None:
    base = torch.arange(6, dtype=torch.float32).reshape(2, 3)

    data = serialize_tensors({"t": base.t(), "row": base[0]})

    assert data == serialize_tensors({"t": base.t().contiguous().clone(), "row": base[0].clone()})


def test_header_holds_no_metadata() -> None:
    data = serialize_tensors({"x": torch.zeros(1)})

    (length,) = struct.unpack("<Q", data[:8])
    assert "__metadata__" not in json.loads(data[8 : 8 + length])


def _torch_save_bytes() -> bytes:
    buffer = io.BytesIO()
    torch.save({"x": torch.zeros(2)}, buffer)
    return buffer.getvalue()


VALID = serialize_tensors({"x": torch.ones(4)})


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"", id="empty"),
        pytest.param(b"garbage!" * 4, id="garbage"),
        pytest.param(VALID[:-3], id="truncated-data"),
        pytest.param(VALID[:20], id="truncated-header"),
        pytest.param(pickle.dumps({"x": [1.0, 2.0]}), id="pickle"),
        pytest.param(_torch_save_bytes(), id="torch-save"),
        pytest.param(struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}", id="header-too-large"),
        pytest.param(struct.pack("<Q", 8) + b"[1,2,3] ", id="header-not-object"),
        pytest.param(struct.pack("<Q", 8) + b"\xff\xfe\xfd{}   ", id="header-not-utf8"),
    ],
)
def test_bytes_that_are_not_canonical_safetensors_are_refused(data: bytes) -> None:
    with pytest.raises(MalformedBlob):
        deserialize_tensors(data, max_bytes=LIMIT)


def test_duplicate_header_keys_are_refused() -> None:
    entry = b'{"dtype":"F32","shape":[1],"data_offsets":[0,4]}'
    header = b'{"x":' + entry + b',"x":' + entry + b"}"
    data = struct.pack("<Q", len(header)) + header + b"\x00" * 4

    with pytest.raises(MalformedBlob, match="duplicate"):
        deserialize_tensors(data, max_bytes=LIMIT)


@pytest.mark.parametrize("tensor", [torch.zeros(2, dtype=torch.float16), torch.zeros(2, dtype=torch.int64)])
def test_non_float32_blobs_are_refused_as_unsupported_dtype(tensor: torch.Tensor) -> None:
    data = raw_safetensors_save({"x": tensor})

    with pytest.raises(UnsupportedDtype, match="only F32"):
        deserialize_tensors(data, max_bytes=LIMIT)


def test_blobs_over_the_limit_are_refused() -> None:
    with pytest.raises(MalformedBlob, match="over the 100-byte limit"):
        deserialize_tensors(serialize_tensors({"x": torch.zeros(64)}), max_bytes=100)


def test_canonical_json_is_sorted_compact_utf8() -> None:
    data = canonical_json({"rule": "fedavg", "accuracy": 0.5, "nodes": ("b", "a"), "note": "é"})

    assert data == '{"accuracy":0.5,"nodes":["b","a"],"note":"é","rule":"fedavg"}'.encode()


@pytest.mark.parametrize("value", [float("nan"), {"x": [float("inf")]}, {1: "a"}])
def test_canonical_json_refuses_ambiguous_values(value: object) -> None:
    with pytest.raises(ValueError, match=r"non-finite|keys must be strings"):
        canonical_json(value)


# ---------------------------------------------------------------------------------- tensor_views


def _raw_blob(entries: dict, body: bytes, *, prefix: bytes = b"") -> bytes:
    """A blob with exactly this header (padded to 8 bytes like safetensors) and body."""
    header = prefix + json.dumps(entries, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + body


def _outcome(read, data: bytes) -> object:  # type: ignore[no-untyped-def]
    """What a reader makes of `data`: the tensors as lists, or the class of its refusal."""
    try:
        tensors = read(data, max_bytes=LIMIT)
    except MalformedBlob as exc:
        return type(exc)
    return {name: (tuple(t.shape), t.dtype, t.tolist()) for name, t in tensors.items()}


F32 = "F32"
FOUR = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(serialize_tensors({"b": torch.randn(3), "a": torch.randn(2, 5), "s": torch.tensor(7.0)}), id="canonical"),
        pytest.param(serialize_tensors({"e": torch.zeros(0, 3), "x": torch.ones(2)}), id="canonical-empty-tensor"),
        pytest.param(
            _raw_blob({"a": {"dtype": F32, "shape": [2], "data_offsets": [8, 16]}, "b": {"dtype": F32, "shape": [2], "data_offsets": [0, 8]}}, FOUR),
            id="offsets-not-in-name-order",
        ),
        pytest.param(
            _raw_blob({"__metadata__": {"k": "v"}, "a": {"dtype": F32, "shape": [4], "data_offsets": [0, 16]}}, FOUR),
            id="with-metadata",
        ),
        pytest.param(
            _raw_blob({"__metadata__": {"dtype": F32, "shape": [4], "data_offsets": [0, 16]}}, FOUR),
            id="metadata-shaped-like-a-tensor",
        ),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [2], "data_offsets": [0, 8]}, "b": {"dtype": F32, "shape": [1], "data_offsets": [12, 16]}}, FOUR), id="gap"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [3], "data_offsets": [0, 12]}, "b": {"dtype": F32, "shape": [2], "data_offsets": [8, 16]}}, FOUR), id="overlap"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [3], "data_offsets": [0, 12]}}, FOUR), id="trailing-bytes"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [0, 16]}}, FOUR[:12]), id="truncated"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [3], "data_offsets": [0, 16]}}, FOUR), id="shape-disagrees"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [4, 20]}}, FOUR), id="not-from-zero"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [-16, 0]}}, FOUR), id="negative-offset"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4.0], "data_offsets": [0, 16]}}, FOUR), id="float-shape"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [True, 4], "data_offsets": [0, 16]}}, FOUR), id="bool-shape"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [0, 16, 16]}}, FOUR), id="three-offsets"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4]}}, FOUR), id="no-offsets"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [0, 16], "extra": 1}}, FOUR), id="extra-key"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [4], "data_offsets": [0, 16]}}, FOUR, prefix=b" "), id="space-before-header"),
        pytest.param(_raw_blob({"a": {"dtype": "F16", "shape": [8], "data_offsets": [0, 16]}}, FOUR), id="fp16"),
        pytest.param(_raw_blob({"a": {"dtype": F32, "shape": [0, 2**63], "data_offsets": [0, 0]}}, b""), id="empty-with-a-dim-over-int64"),
    ],
)
def test_tensor_views_accept_and_refuse_exactly_what_deserialize_tensors_does(data: bytes) -> None:
    assert _outcome(tensor_views, data) == _outcome(deserialize_tensors, data)


def test_tensor_views_read_the_blob_in_place() -> None:
    data = serialize_tensors({"a": torch.randn(64, 3), "b": torch.randn(5)})
    start = np.frombuffer(data, dtype=np.uint8).ctypes.data

    views = tensor_views(data, max_bytes=LIMIT)

    for tensor in views.values():
        assert start <= tensor.data_ptr() < start + len(data)
    assert list(views) == ["a", "b"]
