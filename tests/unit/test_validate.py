"""Update validation: one case per RejectReason the validator can return, plus the accepted path."""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import save as raw_safetensors_save

from ledger.core.validation import Accepted, Rejected, validate_blob, validate_update
from ledger.core.reasons import RejectReason
from ledger.core.serialization import serialize_tensors

BASE = {"bias": torch.zeros(2), "weight": torch.zeros(2, 2)}
LIMIT = 4096


def _update(**changes: torch.Tensor) -> dict[str, torch.Tensor]:
    return {**{name: tensor.clone() for name, tensor in BASE.items()}, **changes}


def _reason(verdict: Accepted | Rejected) -> RejectReason | None:
    return verdict.reason if isinstance(verdict, Rejected) else None


def test_an_update_within_the_norm_bound_is_accepted_with_its_exact_norm() -> None:
    update = _update(bias=torch.tensor([0.0, 4.0]), weight=torch.tensor([[3.0, 0.0], [0.0, 0.0]]))

    verdict = validate_update(update, BASE, max_norm=5.0)

    assert isinstance(verdict, Accepted)
    assert verdict.tensors is update
    assert verdict.update_norm == 5.0


def test_a_valid_blob_is_accepted_with_its_tensors() -> None:
    update = _update(bias=torch.tensor([1.0, 0.0]))

    verdict = validate_blob(serialize_tensors(update), BASE, max_bytes=LIMIT, max_norm=math.inf)

    assert isinstance(verdict, Accepted)
    assert torch.equal(verdict.tensors["bias"], update["bias"])
    assert verdict.update_norm == 1.0


@pytest.mark.parametrize(
    ("tensors", "reason"),
    [
        pytest.param({"bias": torch.zeros(2)}, RejectReason.NAME_MISMATCH, id="missing"),
        pytest.param(_update(extra=torch.zeros(1)), RejectReason.NAME_MISMATCH, id="unexpected"),
        pytest.param(_update(bias=torch.zeros(3)), RejectReason.SHAPE_MISMATCH, id="shape"),
        pytest.param(_update(weight=torch.zeros(4)), RejectReason.SHAPE_MISMATCH, id="flattened"),
        pytest.param(
            _update(bias=torch.zeros(2, dtype=torch.float64)), RejectReason.DTYPE_MISMATCH, id="float64"
        ),
        pytest.param(_update(bias=torch.tensor([0.0, math.nan])), RejectReason.NON_FINITE, id="nan"),
        pytest.param(
            _update(weight=torch.tensor([[0.0, -math.inf], [0.0, 0.0]])), RejectReason.NON_FINITE, id="inf"
        ),
        pytest.param(_update(bias=torch.tensor([3.0, 4.0001])), RejectReason.NORM_TOO_LARGE, id="norm"),
    ],
)
def test_each_problem_is_rejected_with_its_reason(
    tensors: dict[str, torch.Tensor], reason: RejectReason
) -> None:
    verdict = validate_update(tensors, BASE, max_norm=5.0)

    assert _reason(verdict) == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        pytest.param(b"\x00" * (LIMIT + 1), RejectReason.TOO_LARGE, id="too-large"),
        pytest.param(b"not a safetensors blob", RejectReason.MALFORMED, id="malformed"),
        pytest.param(
            raw_safetensors_save({"bias": torch.zeros(2, dtype=torch.float16)}),
            RejectReason.DTYPE_MISMATCH,
            id="fp16",
        ),
        pytest.param(serialize_tensors({"bias": torch.zeros(2)}), RejectReason.NAME_MISMATCH, id="names"),
    ],
)
def test_blob_problems_are_rejected_with_their_reason(data: bytes, reason: RejectReason) -> None:
    verdict = validate_blob(data, BASE, max_bytes=LIMIT, max_norm=5.0)

    assert _reason(verdict) == reason


@pytest.mark.parametrize("max_norm", [0.0, -1.0, math.nan])
def test_a_meaningless_norm_bound_is_a_programming_error(max_norm: float) -> None:
    with pytest.raises(ValueError, match="max_norm"):
        validate_update(_update(), BASE, max_norm=max_norm)


def test_reason_codes_are_the_stable_uint16_values_the_chain_records() -> None:
    assert {reason.name: int(reason) for reason in RejectReason} == {
        "HASH_MISMATCH": 1,
        "MISSING_BLOB": 2,
        "MALFORMED": 3,
        "NAME_MISMATCH": 4,
        "SHAPE_MISMATCH": 5,
        "DTYPE_MISMATCH": 6,
        "NON_FINITE": 7,
        "NORM_TOO_LARGE": 8,
        "TOO_LARGE": 9,
        "ENCODING_MISMATCH": 10,
        "PRIVACY_CLAIM_INVALID": 11,
        "PRIVACY_BUDGET_EXHAUSTED": 12,
        "DUPLICATE_UPDATE": 13,
        "NO_CHANGE": 14,
    }
    assert all(reason.description for reason in RejectReason)
