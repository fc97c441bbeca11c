"""Streaming FedAvg: the same bytes as the reference `ledger.aggregation.fedavg`, one update at a time."""

from __future__ import annotations

import itertools
import random

import pytest
import torch

from aggregator.merge import CollectedRule, StreamingFedAvg, merge_key, start_merge
from ledger.core.aggregation import Update, aggregate, fedavg
from ledger.core.hashing import sha256_hex
from ledger.core.model import state_tensors
from ledger.tasks.digits import DIGITS_MLP
from ledger.core.serialization import serialize_tensors

SHAPES = {"bias": (5,), "scale": (), "weight": (3, 7), "wide": (2, 33)}


def _updates(count: int, *, seed: int) -> list[Update]:
    """Updates whose values span many magnitudes and signs, so every float64 rounding shows."""
    generator = torch.Generator().manual_seed(seed)
    updates = []
    for index in range(count):
        tensors = {
            name: torch.randn(shape, generator=generator) * 10.0 ** torch.randint(-30, 30, shape, generator=generator)
            for name, shape in SHAPES.items()
        }
        updates.append(Update(sha256_hex(serialize_tensors(tensors)), 1 + 37 * index % 101, tensors))
    return updates


def _streamed(updates: list[Update], **kwargs: int) -> dict[str, torch.Tensor]:
    template = updates[0].tensors
    merge = StreamingFedAvg(template, **kwargs)
    for update in sorted(updates, key=lambda u: merge_key(u.update_hash, u.num_samples)):
        merge.add(update)
    return merge.result()


@pytest.mark.parametrize("chunk_elements", [1, 4, 7, 1 << 16])
def test_streaming_fedavg_gives_the_reference_bytes_at_any_chunk_size(chunk_elements: int) -> None:
    updates = _updates(9, seed=chunk_elements)

    streamed = _streamed(updates, chunk_elements=chunk_elements)

    assert serialize_tensors(streamed) == serialize_tensors(fedavg(updates))


def test_streaming_fedavg_gives_the_reference_bytes_on_the_real_model() -> None:
    # Prepare: tensors larger than one chunk, with realistic weights.
    base = state_tensors(DIGITS_MLP.build_model(0))
    generator = torch.Generator().manual_seed(5)
    updates = []
    for index in range(6):
        tensors = {name: t + 0.01 * torch.randn(t.shape, generator=generator) for name, t in base.items()}
        updates.append(Update(sha256_hex(serialize_tensors(tensors)), 50 + index, tensors))

    # Execute
    streamed = _streamed(updates, chunk_elements=100)

    # Assert
    assert serialize_tensors(streamed) == serialize_tensors(fedavg(updates))


def test_summation_order_is_the_references_where_it_decides_the_float32_result() -> None:
    # Prepare: 1 + 2^-24 is a float32 tie. Summed in float64, two 2^-53 vanish if added after 1
    # but survive as 2^-52 if added to each other first, and then break the tie upwards. Each
    # element holds one permutation of the four values across the four updates, so any change of
    # order (or one float32 rounding) shows in at least one element.
    values = [1.0, 2.0**-24, 2.0**-53, 2.0**-53]
    permutations = list(itertools.permutations(range(4)))
    updates = [
        Update(tag * 64, 1, {"w": torch.tensor([values[p[k]] for p in permutations])}) for k, tag in enumerate("abcd")
    ]
    reference = fedavg(updates)
    assert len(set(reference["w"].tolist())) == 2  # the case really is order-sensitive

    # Execute
    streamed = _streamed(list(reversed(updates)))

    # Assert
    assert serialize_tensors(streamed) == serialize_tensors(reference)


def test_equal_hashes_are_summed_in_num_samples_order_as_the_reference_does() -> None:
    first, second = _updates(2, seed=1)
    twin = Update(first.update_hash, first.num_samples + 1, second.tensors)

    streamed = _streamed([twin, first, second])

    assert serialize_tensors(streamed) == serialize_tensors(fedavg([first, second, twin]))


def test_weights_huge_sample_counts_as_the_reference_does() -> None:
    first, second = _updates(2, seed=2)
    heavy = Update(second.update_hash, 2**60 + 1, second.tensors)

    streamed = _streamed([first, heavy])

    assert serialize_tensors(streamed) == serialize_tensors(fedavg([first, heavy]))


def test_inputs_are_not_mutated_and_results_are_fresh() -> None:
    updates = _updates(3, seed=3)
    snapshot = [{name: t.clone() for name, t in u.tensors.items()} for u in updates]
    merge = StreamingFedAvg(updates[0].tensors)
    for update in sorted(updates, key=lambda u: merge_key(u.update_hash, u.num_samples)):
        merge.add(update)

    first = merge.result()
    for tensor in first.values():
        tensor.add_(1.0)
    again = merge.result()

    for update, before in zip(updates, snapshot, strict=True):
        assert all(torch.equal(update.tensors[name], before[name]) for name in before)
    assert serialize_tensors(again) == serialize_tensors(fedavg(updates))


def test_updates_out_of_merge_order_are_refused() -> None:
    low, high = sorted(_updates(2, seed=4), key=lambda u: u.update_hash)
    merge = StreamingFedAvg(low.tensors)
    merge.add(high)

    with pytest.raises(ValueError, match="order"):
        merge.add(low)


def test_an_empty_merge_and_a_different_model_are_refused() -> None:
    (update,) = _updates(1, seed=5)
    merge = StreamingFedAvg(update.tensors)

    with pytest.raises(ValueError, match="empty"):
        merge.result()
    with pytest.raises(ValueError, match="names or shapes"):
        merge.add(Update(update.update_hash, 1, {"bias": torch.zeros(5)}))


def test_plain_fedavg_streams_and_other_rules_collect_and_run_the_pure_rule() -> None:
    updates = _updates(7, seed=6)
    shuffled = updates[:]
    random.Random(0).shuffle(shuffled)
    template = updates[0].tensors

    median = start_merge("coordinate_median", {}, template)
    for update in shuffled:
        median.add(update)

    assert isinstance(start_merge("fedavg", {}, template), StreamingFedAvg)
    assert isinstance(median, CollectedRule)
    assert serialize_tensors(median.result()) == serialize_tensors(aggregate("coordinate_median", updates))
