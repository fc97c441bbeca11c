"""Aggregation rules: exact small cases, order independence, no mutation, same bytes in any process."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch

from ledger.core.aggregation import (
    RULES,
    Update,
    aggregate,
    arc_nnm_trimmed_mean,
    byzantine_budget,
    coordinate_median,
    fedavg,
    krum,
    trimmed_mean,
)
from ledger.core.hashing import sha256_hex
from ledger.core.manifest import trainable_part, with_frozen
from ledger.core.model import state_tensors
from ledger.core.task_spec import TaskSpec, TensorSpec
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


def test_fedavg_caps_each_sample_count_at_max_samples() -> None:
    # Prepare: one update claims 10**12 samples; the cap makes it count as 3, like the other.
    updates = [_update("a", 3, 0.0), _update("b", 10**12, 8.0)]

    assert torch.equal(fedavg(updates, max_samples=3)["w"], torch.tensor([4.0]))
    assert torch.equal(fedavg(updates)["w"], torch.tensor([8.0]))  # uncapped, the claim wins
    with pytest.raises(ValueError, match="max_samples"):
        fedavg(updates, max_samples=0)


def test_arc_nnm_trimmed_mean_small_case_exactly() -> None:
    # Prepare: base 0, changes 1, 2, 3, 4, 100; f = floor(0.4 * 5) = 2.
    # ARC clips the k = floor(2*2*3/5) = 2 longest (4, 100) to the third longest, 3: [1, 2, 3, 3, 3].
    # NNM: each row -> mean of its 3 nearest (ties to the lower row): [2, 2, 3, 3, 3].
    # CWTM drops 2 from each side: 3.
    updates = [_update(tag, 1, value) for tag, value in zip("abcde", [1.0, 2.0, 3.0, 4.0, 100.0], strict=True)]

    result = arc_nnm_trimmed_mean(updates, base={"w": torch.tensor([0.0])})

    assert torch.equal(result["w"], torch.tensor([3.0]))
    assert byzantine_budget(5, 0.4) == 2 and byzantine_budget(4, 0.4) == 1 and byzantine_budget(2, 0.4) == 0


def test_arc_nnm_trimmed_mean_ignores_sample_counts_and_works_on_changes() -> None:
    base = {"w": torch.tensor([10.0, -10.0])}
    honest = [_update(tag, 5, 11.0, -9.0) for tag in "abc"]
    hostile = [_update("d", 10**12, -1000.0, 1000.0), _update("e", 10**12, 1000.0, -1000.0)]

    result = arc_nnm_trimmed_mean(honest + hostile, base=base)

    assert torch.equal(result["w"], torch.tensor([11.0, -9.0]))
    with pytest.raises(ValueError, match="byzantine_fraction"):
        arc_nnm_trimmed_mean(honest, base=base, byzantine_fraction=0.5)


# A task whose backbone is frozen: only the head travels in updates (cf. digits-finetune).
PARTIAL = TaskSpec(
    name="partial",
    version="1",
    code_sha256="c0" * 32,
    hyperparameters={},
    tensors=(
        TensorSpec("backbone.bias", (4,), "float32", False),
        TensorSpec("backbone.weight", (4, 3), "float32", False),
        TensorSpec("head.bias", (2,), "float32", True),
        TensorSpec("head.weight", (2, 4), "float32", True),
    ),
)


def _full_and_partial(count: int, seed: int) -> tuple[dict[str, torch.Tensor], list[Update], list[Update]]:
    """A base, and `count` updates of it as full models (frozen tensors the base's, bit for bit) and
    as what travels (the trainable part), under the same hashes; the last two updates are hostile."""
    generator = torch.Generator().manual_seed(seed)
    base = {t.name: torch.randn(t.shape, generator=generator) for t in PARTIAL.tensors}
    full, partial = [], []
    for index in range(count):
        scale = 50.0 if index >= count - 2 else 0.1
        trained = {name: base[name] + scale * torch.randn(base[name].shape, generator=generator) for name in PARTIAL.trainable_names}
        tensors = with_frozen(trained, base, PARTIAL)
        update_hash = sha256_hex(serialize_tensors(tensors))
        full.append(Update(update_hash, 10 + index, tensors))
        partial.append(Update(update_hash, 10 + index, trainable_part(tensors, PARTIAL)))
    return base, full, partial


def test_arc_nnm_trimmed_mean_over_partial_updates_is_the_rule_over_full_models() -> None:
    # Prepare: 5 updates (f = 2: clipping, mixing and trimming all act); only the head travels.
    base, full, partial = _full_and_partial(5, seed=7)

    # Execute: as the aggregator and the auditor run it (base: the trainable part), with the full
    # base, and over full models.
    merged = aggregate("arc_nnm_trimmed_mean", partial, base=trainable_part(base, PARTIAL))
    merged_full_base = aggregate("arc_nnm_trimmed_mean", partial, base=base)
    reference = aggregate("arc_nnm_trimmed_mean", full, base=base)

    # Assert: the rule returns exactly the travelling tensors; completed with the frozen ones it is
    # the full-model result, bit for bit, and the frozen tensors are the base's.
    assert list(merged) == list(PARTIAL.trainable_names)
    completed = serialize_tensors(with_frozen(merged, base, PARTIAL))
    assert completed == serialize_tensors(with_frozen(merged_full_base, base, PARTIAL)) == serialize_tensors(reference)
    assert all(torch.equal(reference[t.name], base[t.name]) for t in PARTIAL.tensors if not t.trainable)
    assert not torch.equal(reference["head.weight"], base["head.weight"])  # the head did move


def test_arc_nnm_trimmed_mean_refuses_a_base_that_does_not_fit_the_updates() -> None:
    base, _, partial = _full_and_partial(3, seed=8)

    with pytest.raises(ValueError, match=r"the base has no tensors \['head.bias'\]"):
        arc_nnm_trimmed_mean(partial, base={"head.weight": base["head.weight"]})
    with pytest.raises(ValueError, match=r"tensor 'head.bias': the base's shape \(3,\) is not the updates' \(2,\)"):
        arc_nnm_trimmed_mean(partial, base={**base, "head.bias": torch.zeros(3)})


@pytest.mark.parametrize("case", ["fedavg", "coordinate_median", "trimmed_mean", "multi_krum", "arc_nnm_trimmed_mean"])
def test_every_rule_merges_exactly_the_tensors_partial_updates_carry(case: str) -> None:
    rule, params = CASES[case]
    base, _, partial = _full_and_partial(5, seed=9)

    merged = aggregate(rule, partial, base=trainable_part(base, PARTIAL), **params)

    assert list(merged) == list(PARTIAL.trainable_names)
    assert list(with_frozen(merged, base, PARTIAL)) == [t.name for t in PARTIAL.tensors]


def test_krum_needs_2f_plus_3_updates() -> None:
    updates = [_update(tag, 1, 0.0) for tag in "abcd"]

    with pytest.raises(ValueError, match="at least 5 updates"):
        krum(updates, num_byzantine=1)


def _model_updates(count: int, seed: int) -> list[Update]:
    """`count` updates shaped like the real model: its init plus seeded noise, hashed for real."""
    generator = torch.Generator().manual_seed(seed)
    base = MODEL_BASE
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
    "fedavg_capped": ("fedavg", {"max_samples": 20}),
    "coordinate_median": ("coordinate_median", {}),
    "trimmed_mean": ("trimmed_mean", {"trim_ratio": 0.2}),
    "krum": ("krum", {"num_byzantine": 2}),
    "multi_krum": ("krum", {"num_byzantine": 1, "num_selected": 3}),
    "arc_nnm_trimmed_mean": ("arc_nnm_trimmed_mean", {"byzantine_fraction": 0.4}),
}
MODEL_BASE = state_tensors(DIGITS_MLP.build_model(seed=0))  # what `_model_updates` perturbs: the rounds' base


def rule_digests() -> dict[str, str]:
    """SHA-256 of each rule's serialized output on fixed updates (also run in a subprocess)."""
    updates = _model_updates(7, seed=42)
    return {
        case: sha256_hex(serialize_tensors(aggregate(rule, updates, base=MODEL_BASE, **params)))
        for case, (rule, params) in CASES.items()
    }


@pytest.mark.parametrize("case", CASES)
def test_shuffled_arrival_order_gives_identical_bytes(case: str) -> None:
    rule, params = CASES[case]
    updates = _model_updates(7, seed=3)
    shuffled = updates[:]
    random.Random(1).shuffle(shuffled)

    first = serialize_tensors(aggregate(rule, updates, base=MODEL_BASE, **params))
    again = serialize_tensors(aggregate(rule, updates, base=MODEL_BASE, **params))
    reordered = serialize_tensors(aggregate(rule, shuffled, base=MODEL_BASE, **params))

    assert first == again == reordered


@pytest.mark.parametrize("case", CASES)
def test_inputs_are_not_mutated_or_aliased(case: str) -> None:
    rule, params = CASES[case]
    updates = _model_updates(7, seed=4)
    snapshot = [(u.update_hash, {name: t.clone() for name, t in u.tensors.items()}) for u in updates]
    order = [u.update_hash for u in updates]

    base_before = {name: t.clone() for name, t in MODEL_BASE.items()}
    result = aggregate(rule, updates, base=MODEL_BASE, **params)
    for tensor in result.values():
        tensor.add_(1.0)

    assert [u.update_hash for u in updates] == order
    for update, (_, before) in zip(updates, snapshot, strict=True):
        assert all(torch.equal(update.tensors[name], before[name]) for name in before)
    assert all(torch.equal(MODEL_BASE[name], base_before[name]) for name in base_before)


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
        aggregate(rule, [], base=MODEL_BASE, **params)


def test_updates_of_different_models_are_refused() -> None:
    with pytest.raises(ValueError, match="names or shapes"):
        fedavg([_update("a", 1, 1.0), _update("b", 1, 1.0, 2.0)])


def test_unknown_rule_names_the_known_ones() -> None:
    with pytest.raises(
        ValueError,
        match="known: \\['arc_nnm_trimmed_mean', 'coordinate_median', 'fedavg', 'krum', 'trimmed_mean'\\]",
    ):
        aggregate("mean", [_update("a", 1, 1.0)])


@pytest.mark.parametrize(
    ("update_hash", "num_samples"), [("A" * 64, 1), ("0x" + "a" * 62, 1), ("a" * 64, 0), ("a" * 64, True)]
)
def test_update_refuses_bad_hash_or_sample_count(update_hash: str, num_samples: int) -> None:
    with pytest.raises(ValueError, match=r"update_hash must be|num_samples must be"):
        Update(update_hash=update_hash, num_samples=num_samples, tensors={})
