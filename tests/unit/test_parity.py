"""Which bound an ONNX export's parity holds under (`ledger.export.onnx_model.Parity`): pure."""

from __future__ import annotations

import pytest

from ledger.export.onnx_model import Parity


def parity(diff: float, largest: float, *, identical: bool = True) -> Parity:
    return Parity(examples=359, max_abs_logit_diff=diff, max_abs_logit=largest, identical_predictions=identical,
                  torch_accuracy=0.99, onnx_accuracy=0.99)  # fmt: skip


@pytest.mark.parametrize(
    ("diff", "largest", "bound"),
    [
        (9.5e-6, 24.8, "absolute"),
        (1e-5, 1.0, "absolute"),
        (1.53e-5, 38.5, "relative"),  # digits-cnn after 20 epochs: float32 rounding in ONNX Runtime's convolutions
        (1.53e-5, 12.0, None),  # the same difference at small logits is not rounding
        (3e-4, 38.5, None),
    ],
)
def test_the_absolute_bound_first_then_one_relative_to_the_largest_logit(diff: float, largest: float, bound: str | None) -> None:
    found = parity(diff, largest)

    assert found.bound == bound
    assert found.ok is (bound is not None)
    assert found.to_json()["withinBound"] == bound


def test_different_predictions_fail_whatever_the_logits() -> None:
    found = parity(1e-7, 10.0, identical=False)

    assert found.bound == "absolute" and not found.ok
    assert "FAILS" in found.describe() and "DIFFERENT predictions" in found.describe()


def test_the_description_names_the_bound_that_held() -> None:
    assert "(≤ 1e-05)" in parity(2e-6, 10.0).describe()
    assert "(> 1e-05, ≤ 1e-06 × max |logit| 38.5 = 3.85e-05)" in parity(1.53e-5, 38.5).describe()
    assert "(> 1e-05, > 1e-06 × max |logit| 12.0 = 1.2e-05)" in parity(1.53e-5, 12.0).describe()
