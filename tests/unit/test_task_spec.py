"""The pinned task spec (codec, differences named by field), hyperparameters, and the tensor manifest."""

from __future__ import annotations

import copy

import pytest
import torch

from ledger.core.manifest import manifest_mismatch, tensor_manifest, trainable_part, with_frozen
from ledger.core.metadata import GenesisRecord, MetadataError, decode, encode_genesis
from ledger.core.policy import FederationPolicy
from ledger.core.task import TaskError, checked_metrics, resolve_hyperparameters
from ledger.core.task_spec import TaskSpec, TaskSpecError, TaskSpecMismatch, TensorSpec, check_spec, first_difference
from ledger.tasks.breast_cancer import BREAST_CANCER_LOGREG
from ledger.tasks.digits import DIGITS_MLP

SPEC = TaskSpec(
    name="toy",
    version="2",
    code_sha256="c0" * 32,
    hyperparameters={"epochs": 3, "lr": 0.1, "augment": False},
    tensors=(
        TensorSpec("backbone.weight", (4, 3), "float32", False),
        TensorSpec("head.bias", (2,), "float32", True),
        TensorSpec("head.weight", (2, 4), "float32", True),
    ),
    assets={"backbone": "ab" * 32},
)


def test_the_spec_round_trips_through_the_genesis_record_and_hashes_stably() -> None:
    blob = encode_genesis(seed=7, policy=FederationPolicy(rule="fedavg"), task=SPEC)

    record = decode(blob)

    assert isinstance(record, GenesisRecord)
    assert record.task == SPEC and record.seed == 7
    assert record.task.spec_hash == SPEC.spec_hash == TaskSpec.from_json(copy.deepcopy(SPEC.to_json())).spec_hash
    assert SPEC.trainable_names == ("head.bias", "head.weight")


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (("name",), "", "task.name"),
        (("version",), 2, "task.version"),
        (("code_sha256",), "not a hash", "task.code_sha256"),
        (("hyperparameters",), {"lr": [0.1]}, "task.hyperparameters"),
        (("assets",), {"backbone": "short"}, "task.assets"),
        (("tensors",), [], "task.tensors"),
        (("tensors", 0, "dtype"), "float16", "task.tensors[0]"),
        (("tensors", 1, "shape"), [2, -1], "task.tensors[1]"),
        (("tensors", 1, "trainable"), 1, "task.tensors[1]"),
        (("tensors", 2, "name"), "a.first", "sorted by name"),
    ],
)  # fmt: skip
def test_a_malformed_spec_is_refused_naming_the_field(path: tuple, value: object, field: str) -> None:
    document = SPEC.to_json()
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value

    with pytest.raises(TaskSpecError, match=field.replace("[", r"\[").replace("]", r"\]")):
        TaskSpec.from_json(document)


def test_a_genesis_record_without_a_task_is_malformed() -> None:
    blob = encode_genesis(seed=0, policy=FederationPolicy(rule="fedavg"), task=SPEC).replace(b'"task":', b'"tusk":')

    with pytest.raises(MetadataError, match="pins the federation's task"):
        decode(blob)


def _changed(**changes: object) -> TaskSpec:
    document = SPEC.to_json()
    for key, value in changes.items():
        document[key] = value
    return TaskSpec.from_json(document)


@pytest.mark.parametrize(
    ("local", "field", "pinned_value", "local_value"),
    [
        (_changed(version="3"), "task.version", "2", "3"),
        (_changed(code_sha256="d0" * 32), "task.code_sha256", "c0" * 32, "d0" * 32),
        (_changed(hyperparameters={"epochs": 5, "lr": 0.1, "augment": False}), "task.hyperparameters.epochs", 3, 5),
        (_changed(hyperparameters={"epochs": 3, "lr": 0.1, "augment": 0}), "task.hyperparameters.augment", False, 0),
        (_changed(hyperparameters={"epochs": 3, "lr": 0.1}), "task.hyperparameters.augment", False, None),
        (_changed(assets={}), "task.assets.backbone", "ab" * 32, None),
    ],
)  # fmt: skip
def test_the_first_difference_names_its_field_and_both_values(local, field, pinned_value, local_value) -> None:
    difference = first_difference(SPEC, local)

    assert difference is not None
    assert (difference.field, difference.pinned, difference.local) == (field, pinned_value, local_value)


def test_tensor_differences_name_the_tensor_and_attribute() -> None:
    document = SPEC.to_json()
    document["tensors"][0]["trainable"] = True
    unfrozen = TaskSpec.from_json(document)
    document = SPEC.to_json()
    document["tensors"][2]["shape"] = [3, 4]
    reshaped = TaskSpec.from_json(document)
    document = SPEC.to_json()
    del document["tensors"][1]
    dropped = TaskSpec.from_json(document)

    assert first_difference(SPEC, unfrozen).field == "task.tensors.backbone.weight.trainable"
    assert first_difference(SPEC, reshaped).field == "task.tensors.head.weight.shape"
    assert first_difference(SPEC, dropped).field == "task.tensors.head.bias"
    assert first_difference(SPEC, TaskSpec.from_json(SPEC.to_json())) is None


def test_a_mismatch_is_refused_in_one_line_naming_the_field() -> None:
    with pytest.raises(TaskSpecMismatch) as raised:
        check_spec("node", SPEC, _changed(hyperparameters={"epochs": 5, "lr": 0.1, "augment": False}))

    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        "refusing to join: this node's task differs from the one pinned at genesis at "
        "task.hyperparameters.epochs (pinned 3, this node has 5)"
    )


def test_hyperparameter_overrides_keep_their_types() -> None:
    resolved = resolve_hyperparameters(DIGITS_MLP, {"epochs": 1, "lr": 1})

    assert resolved == {"epochs": 1, "batch_size": 32, "lr": 1.0} and type(resolved["lr"]) is float
    with pytest.raises(TaskError, match="has no hyperparameter 'momentum'"):
        resolve_hyperparameters(DIGITS_MLP, {"momentum": 0.5})
    with pytest.raises(TaskError, match="'epochs' must be a finite int, got 1.5"):
        resolve_hyperparameters(DIGITS_MLP, {"epochs": 1.5})
    with pytest.raises(TaskError, match="'epochs' must be a finite int, got True"):
        resolve_hyperparameters(DIGITS_MLP, {"epochs": True})


def test_metrics_must_include_accuracy_and_loss_and_be_finite() -> None:
    assert checked_metrics(DIGITS_MLP, {"accuracy": 1, "loss": 0.5, "f1": 0.9}) == {"accuracy": 1.0, "loss": 0.5, "f1": 0.9}
    with pytest.raises(TaskError, match=r"must report \['loss'\]"):
        checked_metrics(DIGITS_MLP, {"accuracy": 0.5})
    with pytest.raises(TaskError, match="metric 'loss' is nan"):
        checked_metrics(DIGITS_MLP, {"accuracy": 0.5, "loss": float("nan")})


# --------------------------------------------------------------------------- the manifest


def _weights(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {t.name: torch.randn(t.shape, generator=generator) for t in SPEC.tensors}


def test_with_frozen_copies_frozen_tensors_bit_for_bit_and_touches_no_input() -> None:
    base, merged = _weights(0), trainable_part(_weights(1), SPEC)
    snapshot = {name: tensor.clone() for name, tensor in base.items()}

    full = with_frozen(merged, base, SPEC)

    assert list(full) == ["backbone.weight", "head.bias", "head.weight"]
    assert torch.equal(full["backbone.weight"], base["backbone.weight"])
    assert full["backbone.weight"].data_ptr() != base["backbone.weight"].data_ptr()
    assert full["head.weight"] is merged["head.weight"]
    assert all(torch.equal(base[name], snapshot[name]) for name in base)
    with pytest.raises(ValueError, match="exactly the trainable tensors"):
        with_frozen(base, base, SPEC)


def test_manifest_mismatch_names_what_differs() -> None:
    weights = _weights(0)

    assert manifest_mismatch(SPEC, weights) is None
    assert "missing ['head.bias']" in manifest_mismatch(SPEC, {k: v for k, v in weights.items() if k != "head.bias"})
    assert "shape (3,)" in manifest_mismatch(SPEC, {**weights, "head.bias": torch.zeros(3)})
    assert "float64" in manifest_mismatch(SPEC, {**weights, "head.bias": torch.zeros(2, dtype=torch.float64)})


def test_a_manifest_marks_frozen_tensors_and_refuses_integer_buffers() -> None:
    model = BREAST_CANCER_LOGREG.build_model(0)

    manifest = tensor_manifest(model.state_dict(), BREAST_CANCER_LOGREG.trainable)

    assert [(t.name, t.trainable) for t in manifest] == [
        ("linear.bias", True), ("linear.weight", True), ("standardize.mean", False), ("standardize.std", False)
    ]  # fmt: skip
    batch_norm = torch.nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match="num_batches_tracked' has dtype torch.int64"):
        tensor_manifest(batch_norm.state_dict(), lambda name: True)
    with pytest.raises(ValueError, match="no trainable tensor"):
        tensor_manifest(model.state_dict(), lambda name: False)


@pytest.mark.parametrize("override", [{"epochs": 0}, {"epochs": -1}, {"batch_size": 0}, {"lr": -1.0}, {"lr": 0}])
def test_a_hyperparameter_the_task_cannot_train_with_is_refused_before_it_is_pinned(override: dict[str, object]) -> None:
    [name] = override
    with pytest.raises(TaskError, match=f"task 'digits-mlp': hyperparameter '{name}' must be"):
        resolve_hyperparameters(DIGITS_MLP, override)
