"""Update encodings: the stated decode formula bit for bit, partial updates, and every refusal's reason."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import save as raw_safetensors_save

from ledger.core.validation import Accepted, Rejected, validate_blob
from ledger.core.encoding import (
    DecodeError,
    complete_with_base,
    decode_update,
    encode_update,
    quantize_int8,
    read_update_metadata,
)
from ledger.core.hashing import sha256_hex
from ledger.core.model import state_tensors
from ledger.core.policy import ENCODINGS
from ledger.core.reasons import RejectReason
from ledger.core.serialization import serialize_tensors
from ledger.tasks.digits import DIGITS_MLP

LIMIT = 1 << 20
BASE = state_tensors(DIGITS_MLP.build_model(seed=0))
CLAIM = {"accountant": "opacus-rdp", "epsilon": "0.953006", "steps": 10}


def _trained(scale: float = 0.01, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: tensor + scale * torch.randn(tensor.shape, generator=generator) for name, tensor in BASE.items()}


def _reference_decode(blob: bytes, encoding: str) -> dict[str, np.ndarray]:
    """The README's formulas, written with numpy alone from the header: an outside auditor's decoder."""
    from safetensors.numpy import load

    arrays = load(blob)
    base = {name: tensor.numpy() for name, tensor in BASE.items()}
    if encoding == "f32":
        return arrays
    if encoding == "f16":
        return {n: (base[n].astype(np.float64) + arrays[n].astype(np.float64)).astype(np.float32) for n in arrays}
    decoded, start = {}, 0
    for index, name in enumerate(sorted(base)):
        size = base[name].size
        q = arrays["q"][start : start + size].reshape(base[name].shape).astype(np.float64)
        decoded[name] = (base[name].astype(np.float64) + q * np.float64(arrays["scale"][index])).astype(np.float32)
        start += size
    return decoded


def test_plain_f32_is_byte_identical_to_the_model_serializer() -> None:
    weights = _trained()

    assert encode_update(weights, BASE, "f32") == serialize_tensors(weights)


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_decode_is_the_documented_formula_bit_for_bit(encoding: str) -> None:
    weights = _trained()
    blob = encode_update(weights, BASE, encoding, privacy=CLAIM)

    decoded = decode_update(blob, BASE, encoding, max_bytes=LIMIT)

    reference = _reference_decode(blob, encoding)
    assert sorted(decoded.tensors) == sorted(BASE)
    for name, tensor in decoded.tensors.items():
        assert tensor.dtype == torch.float32
        assert tensor.numpy().tobytes() == reference[name].tobytes()
    assert decoded.privacy == CLAIM
    assert read_update_metadata(blob) == (encoding, CLAIM)


@pytest.mark.parametrize(("encoding", "bound"), [("f32", 0.0), ("f16", 1e-3), ("int8", 1 / 127)])
def test_decoded_change_is_within_the_encodings_error(encoding: str, bound: float) -> None:
    weights = _trained()

    decoded = decode_update(encode_update(weights, BASE, encoding), BASE, encoding, max_bytes=LIMIT).tensors

    for name in BASE:
        change = (weights[name] - BASE[name]).double()
        error = (decoded[name].double() - weights[name].double()).abs().max().item()
        # f16 keeps ~11 significant bits of the change; int8 is off by at most half a step (m / 254)
        # plus float32 rounding of the result.
        assert error <= bound * change.abs().max().item() + 1e-6


def test_int8_quantization_never_produces_minus_128_and_maps_the_peak_to_127() -> None:
    change = np.array([-2.0, -1.0, 0.0, 0.5, 2.0])

    q, scale = quantize_int8(change)

    assert scale == np.float32(2.0 / 127)
    assert q.tolist() == [-127, -64, 0, 32, 127]
    assert quantize_int8(np.zeros(3))[0].tolist() == [0, 0, 0]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_a_partial_update_carries_only_its_tensors_and_the_rest_stay_the_bases(encoding: str) -> None:
    head = ["2.bias", "2.weight"]
    weights = _trained()
    blob = encode_update({name: weights[name] for name in head}, BASE, encoding)

    decoded = decode_update(blob, BASE, encoding, max_bytes=LIMIT, names=head)
    full = complete_with_base(decoded.tensors, BASE)

    assert sorted(decoded.tensors) == head
    assert full["0.weight"] is BASE["0.weight"] and full["0.bias"] is BASE["0.bias"]
    assert len(blob) < len(encode_update(weights, BASE, encoding))
    with pytest.raises(DecodeError) as refused:
        decode_update(blob, BASE, encoding, max_bytes=LIMIT)  # the federation expects every tensor
    assert refused.value.reason in (RejectReason.NAME_MISMATCH, RejectReason.SHAPE_MISMATCH)


@pytest.mark.parametrize("sent", ENCODINGS)
@pytest.mark.parametrize("pinned", ENCODINGS)
def test_a_blob_in_another_encoding_than_the_pinned_one_is_refused_by_name(sent: str, pinned: str) -> None:
    blob = encode_update(_trained(), BASE, sent)

    if sent == pinned:
        decode_update(blob, BASE, pinned, max_bytes=LIMIT)
        return
    with pytest.raises(DecodeError) as refused:
        decode_update(blob, BASE, pinned, max_bytes=LIMIT)
    assert refused.value.reason is RejectReason.ENCODING_MISMATCH
    assert f"the blob is encoded {sent!r}; the federation pins {pinned!r}" in refused.value.detail


def _with_header(blob: bytes, edit) -> bytes:
    """The blob with its JSON header rewritten by `edit` (offsets kept: the body is unchanged)."""
    length = int.from_bytes(blob[:8], "little")
    header = edit(json.loads(blob[8 : 8 + length]))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + length :]


def _int8_with(values: np.ndarray | None = None, scales: np.ndarray | None = None) -> bytes:
    blob = encode_update(_trained(), BASE, "int8")
    from safetensors.numpy import load

    arrays = load(blob)
    q = arrays["q"] if values is None else values
    scale = arrays["scale"] if scales is None else scales
    return raw_safetensors_save(
        {"q": torch.from_numpy(q.copy()), "scale": torch.from_numpy(scale.copy())},
        metadata={"fedledger": '{"encoding":"int8"}'},
    )


@pytest.mark.parametrize(
    ("blob", "encoding", "reason"),
    [
        pytest.param(b"\x01" * 16, "int8", RejectReason.MALFORMED, id="not-safetensors"),
        pytest.param(
            raw_safetensors_save(BASE, metadata={"fedledger": '{"encoding":"f32"}', "other": "x"}),
            "f32", RejectReason.MALFORMED, id="two-metadata-keys",
        ),
        pytest.param(
            raw_safetensors_save(BASE, metadata={"fedledger": '{"encoding": "f32"}'}),
            "f32", RejectReason.MALFORMED, id="non-canonical-json",
        ),
        pytest.param(
            raw_safetensors_save(BASE, metadata={"fedledger": '{"encoding":"f32","note":"hi"}'}),
            "f32", RejectReason.MALFORMED, id="unknown-metadata-field",
        ),
        pytest.param(
            raw_safetensors_save(BASE, metadata={"fedledger": '{"encoding":"f16","privacy":[1]}'}),
            "f16", RejectReason.MALFORMED, id="claim-not-an-object",
        ),
        pytest.param(
            raw_safetensors_save({k: v.half() for k, v in BASE.items()}, metadata={"fedledger": '{"encoding":"f32"}'}),
            "f32", RejectReason.DTYPE_MISMATCH, id="f16-bytes-stated-f32",
        ),
        pytest.param(
            raw_safetensors_save({k: v for k, v in BASE.items()}, metadata={"fedledger": '{"encoding":"f16"}'}),
            "f16", RejectReason.DTYPE_MISMATCH, id="f32-bytes-stated-f16",
        ),
        pytest.param(_int8_with(values=np.zeros(10, dtype=np.int8)), "int8", RejectReason.SHAPE_MISMATCH, id="short-q"),
        pytest.param(_int8_with(scales=np.ones(3, dtype=np.float32)), "int8", RejectReason.SHAPE_MISMATCH, id="3-scales"),
        pytest.param(
            _int8_with(values=np.full(sum(t.numel() for t in BASE.values()), -128, dtype=np.int8)),
            "int8", RejectReason.MALFORMED, id="minus-128",
        ),
        pytest.param(_int8_with(scales=-np.ones(4, dtype=np.float32)), "int8", RejectReason.MALFORMED, id="negative-scale"),
    ],
)  # fmt: skip
def test_malformed_blobs_are_refused_with_their_reason(blob: bytes, encoding: str, reason: RejectReason) -> None:
    with pytest.raises(DecodeError) as refused:
        decode_update(blob, BASE, encoding, max_bytes=LIMIT)

    assert refused.value.reason is reason


@pytest.mark.parametrize("encoding", ["f16", "int8"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_validation_runs_on_the_decoded_update(encoding: str, value: float) -> None:
    weights = _trained()
    weights["0.bias"] = weights["0.bias"].clone()
    weights["0.bias"][0] = value
    far = {name: tensor + 50.0 for name, tensor in _trained().items()}

    poisoned = validate_blob(encode_update(weights, BASE, encoding), BASE, max_bytes=LIMIT, max_norm=100.0, encoding=encoding)
    too_far = validate_blob(encode_update(far, BASE, encoding), BASE, max_bytes=LIMIT, max_norm=100.0, encoding=encoding)
    honest = validate_blob(encode_update(_trained(), BASE, encoding), BASE, max_bytes=LIMIT, max_norm=100.0, encoding=encoding)

    assert isinstance(poisoned, Rejected) and poisoned.reason is RejectReason.NON_FINITE
    assert isinstance(too_far, Rejected) and too_far.reason is RejectReason.NORM_TOO_LARGE
    assert isinstance(honest, Accepted)


def test_blob_with_a_claim_has_the_same_bytes_in_another_process() -> None:
    """One metadata key: safetensors cannot order it differently from run to run."""
    script = (
        "from ledger.core.encoding import encode_update; from ledger.core.hashing import sha256_hex;"
        "from tests.unit.test_encoding import BASE, CLAIM, _trained;"
        "print(sha256_hex(encode_update(_trained(), BASE, 'int8', privacy=CLAIM)))"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    other = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)

    assert other.returncode == 0, other.stderr
    assert other.stdout.strip() == sha256_hex(encode_update(_trained(), BASE, "int8", privacy=CLAIM))
