"""Aggregation rules: exact small cases, order independence, no mutation, same bytes in any process."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from ledger.core.aggregation import RULES, Update, aggregate, coordinate_median, fedavg, krum, trimmed_mean
from ledger.core.hashing import sha256_hex
from ledger.core.model import state_tensors
from ledger.tasks.digits import DIGITS_MLP
from ledger.core.serialization import serialize_tensors


def _update(tag: str, num_samples: int, *values: float) -> Update:
    """An update whose single tensor `w` holds `values`; `tag` (one hex char) fixes its hash order."""
    return Update(update_hash=tag * 64, num_samples=num_samples, tensors={"w": torch.tensor(values)})


def test_fedavg_weights_by_num_samples_exactly() -> None:
    updates = [_update("a", 1, 1.0, 2.0), _update("b", 3, 4.0, 8.0)]

    result = fedavg(updates)

    assert torch.equal(result["w"], torch.tensor([3.25, 6.5]))
    assert result["w"].dtype == torch.float32


def test_fedavg_accumulates_in_float64_before_rounding_once() -> None:
    # Prepare: float32 accumulation would round after every addition.
    values = [0.1, 0.2, 0.3, 1e-8]
    updates = [_update(tag, 1, value) for tag, value in zip("abcd", values, strict=True)]
    exact = sum(float(torch.tensor(value)) for value in values) / 4

    # Execute
    result = fedavg(updates)

    # Assert
    assert torch.equal(result["w"], torch.tensor([exact], dtype=torch.float64).to(torch.float32))


def test_coordinate_median_odd_and_even_counts() -> None:
    odd = [_update("a", 1, 1.0, -5.0), _update("b", 1, 5.0, 0.0), _update("c", 9, 3.0, 7.0)]
    even = [*odd, _update("d", 1, 100.0, 8.0)]

    assert torch.equal(coordinate_median(odd)["w"], torch.tensor([3.0, 0.0]))
    assert torch.equal(coordinate_median(even)["w"], torch.tensor([4.0, 3.5]))


def test_trimmed_mean_drops_the_extremes_per_coordinate() -> None:
    updates = [
        _update(tag, 1, value, -value)
        for tag, value in zip("abcde", [0.0, 1.0, 2.0, 3.0, 100.0], strict=True)
    ]

    assert torch.equal(trimmed_mean(updates, trim_ratio=0.2)["w"], torch.tensor([2.0, -2.0]))
    assert torch.equal(trimmed_mean(updates, trim_ratio=0.0)["w"], torch.tensor([21.2, -21.2]))
    with pytest.raises(ValueError, match="trim_ratio"):
        trimmed_mean(updates, trim_ratio=0.5)


def test_krum_picks_the_update_closest_to_its_neighbours_ties_to_the_smaller_hash() -> None:
    # Prepare: scores with f=1 (2 neighbours) are 5, 2, 2, 5, 9413: points 1.0 and 2.0 tie.
    points = {"a": 3.0, "b": 2.0, "c": 1.0, "d": 0.0, "e": 100.0}
    updates = [_update(tag, 1, value) for tag, value in points.items()]
    swapped = [_update({"b": "c", "c": "b"}.get(tag, tag), 1, value) for tag, value in points.items()]

    # Execute / Assert: the tie goes to hash "b…", whichever point it holds.
    assert torch.equal(krum(updates, num_byzantine=1)["w"], torch.tensor([2.0]))
    assert torch.equal(krum(swapped, num_byzantine=1)["w"], torch.tensor([1.0]))


def test_multi_krum_fedavgs_the_best_m() -> None:
    updates = [
        _update("a", 1, 3.0),
        _update("b", 1, 2.0),
        _update("c", 3, 1.0),
        _update("d", 1, 0.0),
        _update("e", 1, 100.0),
    ]

    assert torch.equal(krum(updates, num_byzantine=1, num_selected=2)["w"], torch.tensor([1.25]))


def test_krum_needs_2f_plus_3_updates() -> None:
    updates = [_update(tag, 1, 0.0) for tag in "abcd"]

    with pytest.raises(ValueError, match="at least 5 updates"):
        krum(updates, num_byzantine=1)


def _model_updates(count: int, seed: int) -> list[Update]:
    """`count` updates shaped like the real model: its init plus seeded noise, hashed for real."""
    generator = torch.Generator().manual_seed(seed)
    base = state_tensors(DIGITS_MLP.build_model(seed=0))
    updates = []
    for index in range(count):
        tensors = {
            name: tensor + 0.1 * torch.randn(tensor.shape, generator=generator)
            for name, tensor in base.items()
        }
        updates.append(Update(sha256_hex(serialize_tensors(tensors)), 10 + 7 * index, tensors))
    return updates


CASES: dict[str, tuple[str, dict]] = {
    "fedavg": ("fedavg", {}),
    "coordinate_median": ("coordinate_median", {}),
    "trimmed_mean": ("trimmed_mean", {"trim_ratio": 0.2}),
    "krum": ("krum", {"num_byzantine": 2}),
    "multi_krum": ("krum", {"num_byzantine": 1, "num_selected": 3}),
}


def rule_digests() -> dict[str, str]:
    """SHA-256 of each rule's serialized output on fixed updates (also run in a subprocess)."""
    updates = _model_updates(7, seed=42)
    return {
        case: sha256_hex(serialize_tensors(aggregate(rule, updates, **params)))
        for case, (rule, params) in CASES.items()
    }


@pytest.mark.parametrize("case", CASES)
def test_shuffled_arrival_order_gives_identical_bytes(case: str) -> None:
    rule, params = CASES[case]
    updates = _model_updates(7, seed=3)
    shuffled = updates[:]
    random.Random(1).shuffle(shuffled)

    first = serialize_tensors(aggregate(rule, updates, **params))
    again = serialize_tensors(aggregate(rule, updates, **params))
    reordered = serialize_tensors(aggregate(rule, shuffled, **params))

    assert first == again == reordered


@pytest.mark.parametrize("case", CASES)
def test_inputs_are_not_mutated_or_aliased(case: str) -> None:
    rule, params = CASES[case]
    updates = _model_updates(7, seed=4)
    snapshot = [(u.update_hash, {name: t.clone() for name, t in u.tensors.items()}) for u in updates]
    order = [u.update_hash for u in updates]

    result = aggregate(rule, updates, **params)
    for tensor in result.values():
        tensor.add_(1.0)

    assert [u.update_hash for u in updates] == order
    for update, (_, before) in zip(updates, snapshot, strict=True):
        assert all(torch.equal(update.tensors[name], before[name]) for name in before)


def test_same_bytes_in_a_fresh_process_with_another_thread_count() -> None:
    script = (
        "import json, runpy, torch; torch.set_num_threads(2); "
        f"print(json.dumps(runpy.run_path({__file__!r})['rule_digests']()))"
    )

    completed = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )

    assert json.loads(completed.stdout) == rule_digests()


@pytest.mark.parametrize("rule", RULES)
def test_every_rule_refuses_an_empty_round(rule: str) -> None:
    params = {"trim_ratio": 0.1} if rule == "trimmed_mean" else {"num_byzantine": 0} if rule == "krum" else {}

    with pytest.raises(ValueError, match="empty"):
        aggregate(rule, [], **params)


def test_updates_of_different_models_are_refused() -> None:
    with pytest.raises(ValueError, match="names or shapes"):
        fedavg([_update("a", 1, 1.0), _update("b", 1, 1.0, 2.0)])


def test_unknown_rule_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError, match="known: \\['coordinate_median', 'fedavg', 'krum', 'trimmed_mean'\\]"
    ):
        aggregate("mean", [_update("a", 1, 1.0)])


@pytest.mark.parametrize(
    ("update_hash", "num_samples"), [("A" * 64, 1), ("0x" + "a" * 62, 1), ("a" * 64, 0), ("a" * 64, True)]
)
def test_update_refuses_bad_hash_or_sample_count(update_hash: str, num_samples: int) -> None:
    with pytest.raises(ValueError, match=r"update_hash must be|num_samples must be"):
        Update(update_hash=update_hash, num_samples=num_samples, tensors={})
