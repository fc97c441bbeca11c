"""The aggregator's verified path: every refusal as a verdict, and the reference FedAvg bytes for the rest."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ledger.core.validation import Accepted, Rejected
from aggregator.intake import Limits, admit_and_merge, check_update, checked_in_merge_order
from ledger.chain import events
from ledger.core.aggregation import Update, fedavg
from ledger.core.reasons import RejectReason
from ledger.core.serialization import serialize_tensors
from ledger.store.local import LocalBlobStore

BASE = {"bias": torch.zeros(3), "weight": torch.zeros(4, 5)}
LIMITS = Limits(max_update_bytes=4096, max_norm=10.0)


def _submission(index: int, update_hash: str, num_samples: int = 10) -> events.UpdateSubmitted:
    ref = events.LogRef(block_number=index + 1, block_hash="0x" + "00" * 32, tx_hash="0x" + "11" * 32, log_index=0)
    return events.UpdateSubmitted(ref, round=1, node=f"0x{index + 1:040x}", update_hash=update_hash, num_samples=num_samples)


def _honest(seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: 0.1 * torch.randn(t.shape, generator=generator) for name, t in BASE.items()}


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", max_bytes=8192)


def _round(store: LocalBlobStore) -> tuple[list[events.UpdateSubmitted], dict[int, RejectReason]]:
    """Five honest updates and one of every refusal, in a chain order unrelated to hash order."""
    submissions: list[events.UpdateSubmitted] = []
    expected: dict[int, RejectReason] = {}

    def add(data: bytes, reason: RejectReason | None, num_samples: int = 10) -> str:
        name = store.put(data)
        if reason is not None:
            expected[len(submissions)] = reason
        submissions.append(_submission(len(submissions), name, num_samples))
        return name

    for seed in range(3):
        add(serialize_tensors(_honest(seed)), None, num_samples=10 + seed)
    tampered = add(serialize_tensors(_honest(10)), RejectReason.HASH_MISMATCH)
    store.path_for(tampered).write_bytes(serialize_tensors(_honest(11)))
    add(serialize_tensors({**_honest(12), "bias": torch.tensor([0.0, math.nan, 0.0])}), RejectReason.NON_FINITE)
    add(serialize_tensors({**_honest(13), "bias": torch.full((3,), 100.0)}), RejectReason.NORM_TOO_LARGE)
    add(serialize_tensors({**_honest(14), "bias": torch.zeros(4)}), RejectReason.SHAPE_MISMATCH)
    add(b"not a safetensors blob", RejectReason.MALFORMED)
    add(b"\0" * (LIMITS.max_update_bytes + 1), RejectReason.TOO_LARGE)
    expected[len(submissions)] = RejectReason.MISSING_BLOB
    submissions.append(_submission(len(submissions), "e" * 64))
    for seed in range(3, 5):
        add(serialize_tensors(_honest(seed)), None, num_samples=10 + seed)
    return submissions, expected


def test_every_refusal_is_a_verdict_and_the_merge_is_the_reference_fedavg(store: LocalBlobStore) -> None:
    # Prepare
    submissions, expected = _round(store)

    # Execute
    intake = admit_and_merge(store, submissions, BASE, LIMITS, rule="fedavg", rule_params={}, workers=2)

    # Assert
    assert [(s, reason) for s, reason, _ in intake.rejected] == [(submissions[i], r) for i, r in sorted(expected.items())]
    assert intake.accepted == tuple(s for i, s in enumerate(submissions) if i not in expected)
    reference = fedavg(
        [Update(s.update_hash, s.num_samples, _honest(seed)) for seed, s in zip([0, 1, 2, 3, 4], intake.accepted, strict=True)]
    )
    assert serialize_tensors(intake.weights()) == serialize_tensors(reference)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_verdicts_come_in_merge_order_with_any_number_of_fetchers(store: LocalBlobStore, workers: int) -> None:
    submissions, expected = _round(store)

    verdicts = list(checked_in_merge_order(store, submissions, BASE, LIMITS, workers=workers))

    indexes = [index for index, _ in verdicts]
    assert indexes == sorted(indexes, key=lambda i: (submissions[i].update_hash, submissions[i].num_samples))
    assert sorted(indexes) == list(range(len(submissions)))
    for index, verified in verdicts:
        assert verified.submission is submissions[index]
        if index in expected:
            assert isinstance(verified.verdict, Rejected) and verified.verdict.reason is expected[index]
        else:
            assert isinstance(verified.verdict, Accepted)


def test_one_update_verifies_alone_as_in_the_pipeline(store: LocalBlobStore) -> None:
    submissions, expected = _round(store)

    alone = [check_update(store, s, BASE, LIMITS) for s in submissions]

    assert [v.verdict.reason for v in alone if isinstance(v.verdict, Rejected)] == [r for _, r in sorted(expected.items())]


def test_other_rules_see_every_accepted_update(store: LocalBlobStore) -> None:
    submissions, _ = _round(store)

    intake = admit_and_merge(
        store, submissions, BASE, LIMITS, rule="trimmed_mean", rule_params={"trim_ratio": 0.2}, workers=2
    )

    assert len(intake.accepted) == 5
    assert intake.weights()["weight"].shape == (4, 5)


@pytest.mark.parametrize("workers", [1, 3])
def test_read_buffers_are_reused_across_updates_without_changing_the_merge(
    store: LocalBlobStore, workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: equal-sized honest updates, so every buffer fits every later blob.
    submissions = [
        _submission(index, store.put(serialize_tensors(_honest(seed=index))), num_samples=5 + index) for index in range(8)
    ]
    reused = []
    read = store.get_buffer

    def spying_read(name: str, spare: np.ndarray | None = None) -> memoryview:
        view = read(name, spare)
        reused.append(spare is not None and view.obj is spare)
        return view

    monkeypatch.setattr(store, "get_buffer", spying_read)

    # Execute
    intake = admit_and_merge(store, submissions, BASE, LIMITS, rule="fedavg", rule_params={}, workers=workers)

    # Assert
    reference = fedavg([Update(s.update_hash, s.num_samples, _honest(seed=i)) for i, s in enumerate(submissions)])
    assert serialize_tensors(intake.weights()) == serialize_tensors(reference)
    assert sum(reused) >= len(submissions) - (workers + 1)  # at most workers + 1 buffers are ever allocated
