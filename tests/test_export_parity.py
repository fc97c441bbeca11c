"""ONNX export of every built-in task's trained model: parity with ONNX Runtime on the held-out split,
weights bit for bit, the same bytes on every export, and int8 quantization that keeps the metadata."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import pytest
import torch

from ledger.core.hashing import sha256_hex
from ledger.core.model import state_tensors
from ledger.core.serialization import serialize_tensors
from ledger.core.task import TrainConfig
from ledger.export import onnx_model
from ledger.tasks.registry import installed_tasks, load_installed_task

BUILT_IN = ("breast-cancer-logreg", "digits-cnn", "digits-finetune", "digits-mlp")
METADATA = {"fedledger.model_hash": "ab" * 32, "fedledger.version": "3"}


@dataclass(frozen=True)
class Exported:
    model: torch.nn.Module
    x: torch.Tensor
    y: torch.Tensor
    data: bytes  # the ONNX bytes


@cache
def exported(name: str) -> Exported:
    """The task's model after one epoch of its own training on its whole training pool, exported."""
    torch.set_num_threads(1)
    task = load_installed_task(name)
    split = task.bundled_data()
    model = task.build_model(0)
    hyperparameters = {**task.hyperparameters, "epochs": 1}
    model.load_state_dict(dict(task.train(model, split.train, TrainConfig(hyperparameters=hyperparameters, seed=0))))
    model.eval()
    return Exported(model, split.test.x, split.test.y, onnx_model.export_onnx(model, split.test.x[:2], METADATA))


def test_every_built_in_task_is_covered() -> None:
    assert set(BUILT_IN) <= {task.name for task in installed_tasks()}


@pytest.mark.parametrize("name", BUILT_IN)
def test_onnx_runtime_matches_torch_within_1e_5_and_carries_the_weights_bit_for_bit(name: str) -> None:
    found = exported(name)

    parity = onnx_model.check_parity(found.model, found.data, found.x, found.y)

    assert parity.ok, parity.describe()
    assert parity.max_abs_logit_diff <= 1e-5 and parity.identical_predictions
    assert parity.examples == len(found.y)
    assert parity.onnx_accuracy == parity.torch_accuracy
    weights = state_tensors(found.model)
    from_onnx = onnx_model.initializer_tensors(found.data, sorted(weights))
    assert sha256_hex(serialize_tensors(from_onnx)) == sha256_hex(serialize_tensors(weights))
    assert onnx_model.read_metadata(found.data) == METADATA
    assert b"/site-packages/" not in found.data and b"stack_trace" not in found.data  # nothing of this machine


def test_the_same_weights_give_the_same_bytes_whatever_the_example_batch() -> None:
    found = exported("digits-mlp")

    assert onnx_model.export_onnx(found.model, found.x[:5], METADATA) == found.data


def test_int8_quantization_keeps_the_metadata_and_most_of_the_accuracy() -> None:
    found = exported("digits-mlp")

    int8 = onnx_model.quantize_int8(found.data)

    assert onnx_model.read_metadata(int8) == {**METADATA, "fedledger.quantization": "int8"}
    assert len(int8) < len(found.data) / 2
    assert onnx_model.accuracy(int8, found.x, found.y) >= onnx_model.accuracy(found.data, found.x, found.y) - 0.02
    assert onnx_model.quantize_int8(found.data) == int8


def test_onnx_bytes_with_external_weights_or_garbage_are_refused() -> None:
    import onnx
    from onnx.external_data_helper import set_external_data

    found = exported("digits-mlp")
    proto = onnx.load_from_string(found.data)
    tensor = proto.graph.initializer[0]
    set_external_data(tensor, location="/etc/passwd")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    tensor.ClearField("raw_data")

    with pytest.raises(onnx_model.OnnxModelError, match="refers to external data"):
        onnx_model.run_onnx(proto.SerializeToString(), found.x.numpy())
    with pytest.raises(onnx_model.OnnxModelError, match="not an ONNX model"):
        onnx_model.read_metadata(b"\x00not a protobuf\xff" * 4)
