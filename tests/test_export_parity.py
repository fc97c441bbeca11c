"""ONNX export of trained models: parity with ONNX Runtime on the held-out split, weights bit for bit,
the same bytes on every export, and int8 quantization that keeps the metadata."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from edge_node.training import train_local
from ledger.core.data import load_digits_split
from ledger.core.hashing import sha256_hex
from ledger.core.model import build_model, load_state, state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.export import onnx_model

METADATA = {"fedledger.model_hash": "ab" * 32, "fedledger.version": "3"}


@dataclass(frozen=True)
class Exported:
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    data: bytes  # the ONNX bytes


@pytest.fixture(scope="module")
def exported() -> Exported:
    """The digits MLP after two epochs on the whole training pool, exported; and the held-out split."""
    torch.set_num_threads(1)
    split = load_digits_split()
    model = build_model(0)
    load_state(model, train_local(state_tensors(model), split.train, epochs=2, batch_size=32, lr=0.05, seed=0))
    model.eval()
    return Exported(model, split.test.x, split.test.y, onnx_model.export_onnx(model, split.test.x[:2], METADATA))


def test_onnx_runtime_matches_torch_within_1e_5_and_carries_the_weights_bit_for_bit(exported: Exported) -> None:
    model, x, y, data = exported.model, exported.x, exported.y, exported.data

    parity = onnx_model.check_parity(model, data, x, y)

    assert parity.ok, parity.describe()
    assert parity.max_abs_logit_diff <= 1e-5 and parity.identical_predictions
    assert parity.examples == len(y) == 359
    assert parity.onnx_accuracy == parity.torch_accuracy > 0.8
    weights = state_tensors(model)
    from_onnx = onnx_model.initializer_tensors(data, sorted(weights))
    assert sha256_hex(serialize_tensors(from_onnx)) == sha256_hex(serialize_tensors(weights))
    assert onnx_model.read_metadata(data) == METADATA
    assert b"/site-packages/" not in data and b"stack_trace" not in data  # canonical: no paths of this machine
    assert onnx_model.export_onnx(model, x[:5], METADATA) == data  # the example's batch size does not matter


def test_int8_quantization_keeps_the_metadata_and_most_of_the_accuracy(exported: Exported) -> None:
    x, y, data = exported.x, exported.y, exported.data

    int8 = onnx_model.quantize_int8(data)

    assert onnx_model.read_metadata(int8) == {**METADATA, "fedledger.quantization": "int8"}
    assert len(int8) < len(data) / 2
    assert onnx_model.accuracy(int8, x, y) >= onnx_model.accuracy(data, x, y) - 0.02
    assert onnx_model.quantize_int8(data) == int8


def test_onnx_bytes_with_external_weights_or_garbage_are_refused(exported: Exported) -> None:
    import onnx
    from onnx.external_data_helper import set_external_data

    x = exported.x
    proto = onnx.load_from_string(exported.data)
    tensor = proto.graph.initializer[0]
    set_external_data(tensor, location="/etc/passwd")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")

    with pytest.raises(onnx_model.OnnxModelError, match="refers to external data"):
        onnx_model.run_onnx(proto.SerializeToString(), x.numpy())
    with pytest.raises(onnx_model.OnnxModelError, match="not an ONNX model"):
        onnx_model.read_metadata(b"\x00not a protobuf\xff" * 4)
