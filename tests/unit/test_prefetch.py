"""Prefetching a round's blobs while it is open changes when they are read, never a verdict or a byte."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from aggregator.intake import Limits, admit_and_merge
from aggregator.prefetch import Prefetcher
from ledger.chain import events
from ledger.core.hashing import sha256_hex
from ledger.core.reasons import RejectReason
from ledger.core.serialization import serialize_tensors
from ledger.store.base import BlobNotFound
from ledger.store.local import LocalBlobStore

BASE = {"bias": torch.zeros(3), "weight": torch.zeros(4, 5)}
LIMITS = Limits(max_update_bytes=4096, max_norm=10.0)


def _submission(index: int, update_hash: str) -> events.UpdateSubmitted:
    ref = events.LogRef(block_number=index + 1, block_hash="00" * 32, tx_hash="11" * 32, log_index=0)
    return events.UpdateSubmitted(ref, round=1, node=f"0x{index + 1:040x}", update_hash=update_hash, num_samples=10 + index)


def _update(seed: int, **override: torch.Tensor) -> bytes:
    generator = torch.Generator().manual_seed(seed)
    return serialize_tensors({**{n: 0.1 * torch.randn(t.shape, generator=generator) for n, t in BASE.items()}, **override})


class CountingStore(LocalBlobStore):
    """A local store that counts reads, to see which blobs the intake had to fetch itself."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, max_bytes=8192)
        self.reads: list[str] = []

    def get(self, name: str) -> bytes:
        self.reads.append(name)
        return super().get(name)


@pytest.fixture
def store(tmp_path: Path) -> CountingStore:
    return CountingStore(tmp_path / "blobs")


def _intake(store, submissions):  # type: ignore[no-untyped-def]
    return admit_and_merge(store, submissions, BASE, LIMITS, rule="fedavg", rule_params={}, workers=2)


def test_verdicts_and_merged_bytes_are_those_of_reading_the_store_at_close(store: CountingStore) -> None:
    # Prepare: honest updates, a NaN one, one uploaded only after the prefetch looked, one never uploaded
    blobs = [_update(0), _update(1), _update(2, bias=torch.tensor([0.0, math.nan, 0.0])), _update(3)]
    names = [store.put(blob) for blob in blobs[:3]]
    late = _update(4)
    names += [sha256_hex(late), "e" * 64]
    submissions = [_submission(i, name) for i, name in enumerate(names)]

    # Execute
    with Prefetcher(store, budget_bytes=1 << 20, workers=2) as prefetch:
        prefetch.add(submissions)
        prefetched = prefetch.finish()
        store.put(late)  # lands after the prefetch missed it
        store.reads.clear()
        through_prefetch = _intake(prefetched, submissions)
        read_at_close = sorted(store.reads)
    straight = _intake(store, submissions)

    # Assert
    assert [(s.update_hash, r) for s, r, _ in through_prefetch.rejected] == [
        (names[2], RejectReason.NON_FINITE),
        (names[4], RejectReason.MISSING_BLOB),
    ]
    assert through_prefetch.accepted == straight.accepted and through_prefetch.rejected == straight.rejected
    assert serialize_tensors(through_prefetch.weights()) == serialize_tensors(straight.weights())
    assert read_at_close == sorted([names[3], names[4]])  # only the two it lacked came from the store


def test_past_the_budget_updates_are_read_at_close(store: CountingStore) -> None:
    blobs = [_update(seed) for seed in range(4)]
    submissions = [_submission(i, store.put(blob)) for i, blob in enumerate(blobs)]

    with Prefetcher(store, budget_bytes=len(blobs[0]) + 1, workers=1) as prefetch:
        prefetch.add(submissions[:1])
        prefetch.finish()
        prefetch.add(submissions[1:])  # over the budget: not fetched ahead
        prefetched = prefetch.finish()
        store.reads.clear()
        intake = _intake(prefetched, submissions)

    assert len(intake.accepted) == 4
    assert sorted(store.reads) == sorted(s.update_hash for s in submissions[1:])


def test_a_kept_copy_is_handed_out_once_and_a_failed_prefetch_is_not_kept(store: CountingStore) -> None:
    name = store.put(_update(0))
    with Prefetcher(store, budget_bytes=1 << 20, workers=1) as prefetch:
        prefetch.add([_submission(0, name), _submission(1, "e" * 64)])
        prefetched = prefetch.finish()
        store.reads.clear()

        assert prefetched.get(name) == store.get(name)
        assert store.reads == [name]  # the kept copy served the first read; the second went to the store
        with pytest.raises(BlobNotFound):
            prefetched.get("e" * 64)
