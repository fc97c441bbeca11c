"""A torch module as canonical ONNX bytes, and the checks that those bytes compute what the module does.

The module is exported in memory with torch's dynamo exporter at opset 18 (saving to a path may
split the weights into a separate `.onnx.data` file). The exporter annotates each node with stack
traces holding absolute source paths; `canonicalize` drops them and the doc strings, so the same
weights and toolchain give the same bytes on any machine. The weights travel bit for bit: every
`state_dict` tensor becomes an initializer of the same name, so `initializer_tensors` reads them
back and a verifier can re-hash them against the chain without running anything.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from ledger.core.errors import LedgerError

OPSET = 18  # torchlib's native opset; ONNX Runtime 1.32 runs up to 23
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORTER = f"torch.onnx.export(dynamo=True, opset_version={OPSET}, optimize=True) + canonicalize"
QUANTIZER = "onnxruntime.quantization.quantize_dynamic(weight_type=QInt8)"
METADATA_PREFIX = "fedledger."


class OnnxModelError(LedgerError):
    """ONNX bytes that cannot be used as asked (unparsable, external data, a weight missing)."""


def export_onnx(model: nn.Module, example: torch.Tensor, metadata: Mapping[str, str]) -> bytes:
    """`model` (put in eval mode) as ONNX bytes: input `input` with a dynamic batch axis, output `logits`,
    `metadata` as the model's metadata properties. Same weights and toolchain, same bytes."""
    model.eval()
    with _quiet_exporter():
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            optimize=True,
            verbose=False,
        )
    if program is None:  # only the legacy exporter returns None
        raise OnnxModelError("the exporter returned no program")
    proto = program.model_proto
    canonicalize(proto)
    _set_metadata(proto, metadata)
    onnx.checker.check_model(proto, full_check=True)
    return _serialize(proto)


def canonicalize(proto: onnx.ModelProto) -> None:
    """Drop, in place, what varies between machines and runs but not with the weights: per-node and
    per-value metadata (stack traces with absolute paths, FX names) and doc strings. None of it
    affects inference."""
    proto.doc_string = ""
    graph = proto.graph
    graph.doc_string = ""
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
    for value in [*graph.input, *graph.output, *graph.value_info]:
        value.doc_string = ""
        del value.metadata_props[:]
    for tensor in graph.initializer:
        tensor.doc_string = ""
        del tensor.metadata_props[:]
    del graph.metadata_props[:]


def read_metadata(data: bytes) -> dict[str, str]:
    """The model's metadata properties."""
    return {entry.key: entry.value for entry in parse(data).metadata_props}


def parse(data: bytes) -> onnx.ModelProto:
    """ONNX bytes from anywhere as a ModelProto; refuses weights stored outside the file."""
    try:
        proto = onnx.load_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise OnnxModelError(f"not an ONNX model: {exc}") from None
    for tensor in proto.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            raise OnnxModelError(f"initializer {tensor.name!r} refers to external data: an export holds its weights inline")
    return proto


def initializer_tensors(data: bytes, names: Sequence[str]) -> dict[str, torch.Tensor]:
    """The initializers called `names`, as float32 tensors (the weights the ONNX file computes with)."""
    found = {tensor.name: tensor for tensor in parse(data).graph.initializer}
    missing = sorted(set(names) - set(found))
    if missing:
        raise OnnxModelError(f"the ONNX file has no initializer for {missing}")
    tensors = {}
    for name in names:
        array = numpy_helper.to_array(found[name])
        if array.dtype != np.float32:
            raise OnnxModelError(f"initializer {name!r} is {array.dtype}, not float32")
        tensors[name] = torch.from_numpy(np.array(array))
    return tensors


def run_onnx(data: bytes, x: np.ndarray) -> np.ndarray:
    """ONNX Runtime's output for the batch `x` (CPU provider, one thread: the same figures on every run)."""
    import onnxruntime

    parse(data)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        (output,) = session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})
    except Exception as exc:  # ONNX Runtime's errors are its own pybind classes: all mean "cannot run it"
        raise OnnxModelError(f"ONNX Runtime cannot run the model: {exc}") from None
    return np.asarray(output)


def accuracy(data: bytes, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of `x` whose predicted class (ONNX Runtime's argmax) is `y`."""
    predictions = run_onnx(data, x.numpy()).argmax(axis=1)
    return float(np.mean(predictions == y.numpy()))


# ONNX Runtime must give the same predictions as torch and logits within 1e-5 absolute. Where float32
# rounding makes that impossible, a bound relative to the largest logit applies instead, and says so:
# digits-cnn trained for 20 epochs (largest |logit| 38.5) differs by 1.53e-5, because ONNX Runtime's
# own result is 1.46e-5 from the float64 one (torch's is 0.9e-5; the graph optimization level and the
# batch layout change nothing). 1e-6 of the largest logit is about eight float32 ulps of it.
ABSOLUTE_BOUND = 1e-5
RELATIVE_BOUND = 1e-6


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against the torch module on one batch: the held-out split, in one call each."""

    examples: int
    max_abs_logit_diff: float
    max_abs_logit: float  # the largest |logit| torch gives on the split
    identical_predictions: bool
    torch_accuracy: float
    onnx_accuracy: float

    @property
    def bound(self) -> str | None:
        """"absolute" when within 1e-5, else "relative" when within 1e-6 × the largest |logit|, else None."""
        if self.max_abs_logit_diff <= ABSOLUTE_BOUND:
            return "absolute"
        if self.max_abs_logit_diff <= RELATIVE_BOUND * self.max_abs_logit:
            return "relative"
        return None

    @property
    def ok(self) -> bool:
        return self.identical_predictions and self.bound is not None

    def describe(self) -> str:
        verdict = "holds" if self.ok else "FAILS"
        same = "identical" if self.identical_predictions else "DIFFERENT"
        if self.bound == "absolute":
            within = f"≤ {ABSOLUTE_BOUND:g}"
        else:
            allowed = RELATIVE_BOUND * self.max_abs_logit
            relation = "≤" if self.bound == "relative" else ">"
            within = f"> {ABSOLUTE_BOUND:g}, {relation} {RELATIVE_BOUND:g} × max |logit| {self.max_abs_logit:.1f} = {allowed:.3g}"
        return (
            f"parity {verdict} on {self.examples} held-out examples: max |Δlogit| {self.max_abs_logit_diff:.3g} "
            f"({within}), {same} predictions, accuracy torch {self.torch_accuracy:.4f} / onnx {self.onnx_accuracy:.4f}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "examples": self.examples,
            "maxAbsLogitDiff": self.max_abs_logit_diff,
            "maxAbsLogit": self.max_abs_logit,
            "absoluteBound": ABSOLUTE_BOUND,
            "relativeBound": RELATIVE_BOUND,
            "withinBound": self.bound,
            "identicalPredictions": self.identical_predictions,
            "torchAccuracy": self.torch_accuracy,
            "onnxAccuracy": self.onnx_accuracy,
        }


def check_parity(model: nn.Module, data: bytes, x: torch.Tensor, y: torch.Tensor) -> Parity:
    """Run the whole held-out batch through torch (float32, eval mode) and through ONNX Runtime, and compare."""
    if len(x) == 0:
        raise ValueError("parity needs at least one held-out example")
    model.eval()
    with torch.no_grad():
        expected = model(x).numpy()
    actual = run_onnx(data, x.numpy())
    if actual.shape != expected.shape:
        raise OnnxModelError(f"ONNX Runtime gives logits of shape {actual.shape}, torch {expected.shape}")
    labels = y.numpy()
    return Parity(
        examples=len(x),
        max_abs_logit_diff=float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64)))),
        max_abs_logit=float(np.max(np.abs(expected))),
        identical_predictions=bool(np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1))),
        torch_accuracy=float(np.mean(expected.argmax(axis=1) == labels)),
        onnx_accuracy=float(np.mean(actual.argmax(axis=1) == labels)),
    )


def quantize_int8(data: bytes) -> bytes:
    """ONNX Runtime's dynamic int8 quantization (weights int8, activations quantized at run time).

    Needs no calibration data, so nothing beyond the committed weights is used. The quantizer drops
    the source's metadata properties; they are put back, with `fedledger.quantization=int8`.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = parse(data)
    with tempfile.TemporaryDirectory(prefix="fedledger-int8-") as work, _quiet_quantizer():
        float_path, int8_path = Path(work) / "float.onnx", Path(work) / "int8.onnx"
        float_path.write_bytes(data)
        quantize_dynamic(float_path, int8_path, weight_type=QuantType.QInt8)
        quantized = onnx.load_from_string(int8_path.read_bytes())
    metadata = {entry.key: entry.value for entry in source.metadata_props}
    metadata[METADATA_PREFIX + "quantization"] = "int8"
    _set_metadata(quantized, metadata)
    return _serialize(quantized)


def toolchain() -> dict[str, str]:
    """The versions the ONNX bytes depend on (the same versions give the same bytes)."""
    import onnxruntime
    import onnxscript

    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxscript": onnxscript.__version__,
        "onnxruntime": onnxruntime.__version__,
    }


def _set_metadata(proto: onnx.ModelProto, metadata: Mapping[str, str]) -> None:
    del proto.metadata_props[:]
    for key in sorted(metadata):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(metadata[key])


def _serialize(proto: onnx.ModelProto) -> bytes:
    return proto.SerializeToString(deterministic=True)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter warns that torchvision's ops are skipped (no torchvision here) and about a
    pytree deprecation inside torch: neither concerns the export."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = registration.level
    registration.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        registration.setLevel(level)


class _NoPreprocessingHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing" not in record.getMessage()


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer (through the root logger) suggests its pre-processing pass: not needed for
    these small graphs."""
    root, hint = logging.getLogger(), _NoPreprocessingHint()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)
