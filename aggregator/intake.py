"""The aggregator's intake: fetch each update, re-hash it, validate it, merge it.

Every submission is fetched from the store (whose `get` re-hashes the bytes against the name the
chain recorded), decoded in the pinned encoding and validated against the base model, and, when
the federation trains with DP, its privacy claim is judged (`ledger.privacy.judge`); each failure
becomes a `Rejected` verdict with the reason the chain records. Accepted updates are merged in
(hash, num_samples) order, the order the rules sum in.

The work is spread over the machine's cores: `workers` threads each verify one update (file
reads, hashlib and numpy's loops all release the GIL on large buffers) while the calling thread
merges the updates already verified, in merge order. At most `workers` updates are in flight
beyond the one being merged, so memory stays bounded whatever the number of updates. Stores that
can read into a caller's buffer (`BufferedBlobStore`) are parsed in place, and when the merge
keeps nothing of an update (streaming FedAvg) its buffer is reused for a later one: allocating
fresh memory for a 100 MB blob costs the kernel more than reading the blob into it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ledger.chain import events
from ledger.chain.rounds import copies_of_earlier
from ledger.core.aggregation import Update, Weights
from ledger.core.reasons import RejectReason
from ledger.privacy.judge import ClaimVerdict
from ledger.store.base import BlobNotFound, BlobStore, BlobTooLarge, BufferedBlobStore, HashMismatch

from aggregator.merge import Merge, merge_key, start_merge
from ledger.core.validation import Accepted, Rejected, validate_blob


# Judges a submission's privacy claim (the blob's, or None) against the node's earlier updates.
PrivacyCheck = Callable[[events.UpdateSubmitted, Mapping[str, Any] | None], ClaimVerdict]


@dataclass(frozen=True)
class Checked:
    """One submission after fetch + re-hash + validation (+ its privacy claim, `epsilon` if verified)."""

    submission: events.UpdateSubmitted
    verdict: Accepted | Rejected
    epsilon: str | None = None
    fetch_seconds: float = 0.0  # download + re-hash (the store's `get`)
    validate_seconds: float = 0.0  # parse, checks against the base, privacy claim


@dataclass(frozen=True)
class Limits:
    """What an update may be: its size in bytes, the L2 norm of its change from the base, and the
    encoding its bytes must be in."""

    max_update_bytes: int
    max_norm: float
    encoding: str = "f32"


@dataclass(frozen=True)
class RoundIntake:
    """A round's submissions sorted into accepted and rejected (both in chain order), plus the merge.

    The accepted updates are already folded into `merge` (streaming rules hold no tensors);
    `weights()` finishes it, and raises what the rule raises (e.g. too few updates for Krum).
    `epsilons` holds each node's cumulative ε where the accountant verified its claim.
    `timings` are seconds of work per phase: `fetch_rehash` and `validate` summed over the worker
    threads (they overlap each other and the merge), `merge` on the calling thread.
    """

    accepted: tuple[events.UpdateSubmitted, ...]
    rejected: tuple[tuple[events.UpdateSubmitted, RejectReason, str], ...]
    merge: Merge
    epsilons: Mapping[str, str]
    timings: Mapping[str, float] = field(default_factory=dict)

    def weights(self) -> Weights:
        return self.merge.result()


def fetch(
    store: BlobStore, submission: events.UpdateSubmitted, spare: np.ndarray | None = None
) -> bytes | memoryview | Rejected:
    """The submission's bytes, re-hashed by the store; a missing, altered or oversized blob is a verdict.

    A store that can read into a private buffer does (into `spare` when it fits), so the blob
    is parsed in place.
    """
    try:
        if isinstance(store, BufferedBlobStore):
            return store.get_buffer(submission.update_hash, spare)
        return store.get(submission.update_hash)
    except HashMismatch as exc:
        return Rejected(RejectReason.HASH_MISMATCH, str(exc))
    except BlobNotFound as exc:
        return Rejected(RejectReason.MISSING_BLOB, str(exc))
    except BlobTooLarge as exc:
        return Rejected(RejectReason.TOO_LARGE, str(exc))


def check_update(
    store: BlobStore, submission: events.UpdateSubmitted, base: Mapping[str, torch.Tensor], limits: Limits
) -> Checked:
    """Fetch, re-hash and validate one update; every failure becomes a `Rejected` verdict."""
    verified, _ = _check_into(store, submission, base, limits, None, None)
    return verified


def checked_in_merge_order(
    store: BlobStore,
    submissions: Sequence[events.UpdateSubmitted],
    base: Mapping[str, torch.Tensor],
    limits: Limits,
    *,
    workers: int,
) -> Iterator[tuple[int, Checked]]:
    """(index in `submissions`, verdict) for every submission, in `merge_key` order.

    `workers` threads check up to `workers` updates ahead of the one this thread hands out;
    errors other than the store refusals `fetch` turns into verdicts propagate.
    """
    return _pipeline(store, submissions, base, limits, workers=workers, spares=None, privacy=None)


def admit_and_merge(
    store: BlobStore,
    submissions: Sequence[events.UpdateSubmitted],
    base: Mapping[str, torch.Tensor],
    limits: Limits,
    *,
    rule: str,
    rule_params: Mapping[str, Any],
    workers: int,
    privacy: PrivacyCheck | None = None,
    settled: Collection[str] = frozenset(),
) -> RoundIntake:
    """Checks every submission and folds each accepted one into the round's merge as it arrives.

    With `privacy`, an update that passes every other check must also have its claim accepted.
    A hash submitted by several nodes is fetched and merged once, for the node that submitted it
    first on chain; the later copies are rejected as duplicates (see `duplicates`).
    The submissions of `settled` nodes (their rejection is already on chain) are neither fetched
    nor returned; they only count as the first submitters of their hashes.
    """
    merge = start_merge(rule, rule_params, base)
    # Buffers may be reused only if nothing of an update outlives its turn in the loop below.
    spares = None if merge.keeps_updates else _Spares()
    refusals: dict[int, Rejected | None] = dict(duplicates(submissions))  # None: accepted
    skipped = {index for index, submission in enumerate(submissions) if submission.node in settled}
    originals = [index for index in range(len(submissions)) if index not in refusals and index not in skipped]
    unique = [submissions[index] for index in originals]
    epsilons: dict[str, str] = {}
    timings = {"fetch_rehash": 0.0, "validate": 0.0, "merge": 0.0}
    for position, verified in _pipeline(store, unique, base, limits, workers=workers, spares=spares, privacy=privacy):
        timings["fetch_rehash"] += verified.fetch_seconds
        timings["validate"] += verified.validate_seconds
        if verified.epsilon is not None:
            epsilons[verified.submission.node] = verified.epsilon
        verdict = verified.verdict
        if isinstance(verdict, Accepted):
            submission = verified.submission
            started = time.perf_counter()
            merge.add(Update(submission.update_hash, submission.num_samples, verdict.tensors))
            timings["merge"] += time.perf_counter() - started
            refusals[originals[position]] = None
        else:
            refusals[originals[position]] = verdict
        del verified, verdict  # done with this update: its buffer may now be reused
    accepted = tuple(s for i, s in enumerate(submissions) if i not in skipped and refusals[i] is None)
    rejected = tuple(
        (s, refusal.reason, refusal.detail)
        for i, s in enumerate(submissions)
        if i not in skipped and (refusal := refusals[i]) is not None
    )
    return RoundIntake(accepted=accepted, rejected=rejected, merge=merge, epsilons=epsilons, timings=timings)


def duplicates(submissions: Sequence[events.UpdateSubmitted]) -> dict[int, Rejected]:
    """The copies of an earlier submission's hash (`ledger.chain.rounds.copies_of_earlier`), rejected."""
    return {
        index: Rejected(
            RejectReason.DUPLICATE_UPDATE,
            f"{earlier.node} submitted {submissions[index].update_hash} first (block {earlier.ref.block_number})",
        )
        for index, earlier in copies_of_earlier(submissions).items()
    }


# ---------------------------------------------------------------------------------- plumbing


class _Spares:
    """Read buffers handed back once their update is merged, for the next blobs to be read into."""

    def __init__(self) -> None:
        self._free: list[np.ndarray] = []
        self._lock = threading.Lock()

    def take(self) -> np.ndarray | None:
        with self._lock:
            return self._free.pop() if self._free else None

    def give(self, buffer: np.ndarray | None) -> None:
        if buffer is not None:
            with self._lock:
                self._free.append(buffer)


def _check_into(
    store: BlobStore,
    submission: events.UpdateSubmitted,
    base: Mapping[str, torch.Tensor],
    limits: Limits,
    spare: np.ndarray | None,
    privacy: PrivacyCheck | None,
) -> tuple[Checked, np.ndarray | None]:
    """`check_update`, reading into `spare` if the store can; also returns the buffer the blob went to."""
    started = time.perf_counter()
    fetched = fetch(store, submission, spare)
    fetched_at = time.perf_counter()
    if isinstance(fetched, Rejected):
        return Checked(submission, fetched, fetch_seconds=fetched_at - started), spare
    buffer = fetched.obj if isinstance(fetched, memoryview) and isinstance(fetched.obj, np.ndarray) else spare
    verdict: Accepted | Rejected = validate_blob(
        fetched, base, max_bytes=limits.max_update_bytes, max_norm=limits.max_norm, encoding=limits.encoding
    )
    if privacy is not None and isinstance(verdict, Accepted):
        judged = privacy(submission, verdict.privacy)
        epsilon = judged.epsilon
        if judged.reason is not None:
            verdict = Rejected(judged.reason, judged.detail)
    else:
        epsilon = None
    timed = {"fetch_seconds": fetched_at - started, "validate_seconds": time.perf_counter() - fetched_at}
    return Checked(submission, verdict, epsilon, **timed), buffer


def _pipeline(
    store: BlobStore,
    submissions: Sequence[events.UpdateSubmitted],
    base: Mapping[str, torch.Tensor],
    limits: Limits,
    *,
    workers: int,
    spares: _Spares | None,
    privacy: PrivacyCheck | None,
) -> Iterator[tuple[int, Checked]]:
    """`checked_in_merge_order`; with `spares`, an update's buffer is reused as soon as the caller
    asks for the next update, so the caller must be done with the previous one's tensors by then."""
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    order = sorted(
        range(len(submissions)), key=lambda i: merge_key(submissions[i].update_hash, submissions[i].num_samples)
    )
    upcoming = iter(order)

    def task(index: int) -> tuple[Checked, np.ndarray | None]:
        spare = spares.take() if spares is not None else None
        return _check_into(store, submissions[index], base, limits, spare, privacy)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="intake") as pool:
        ahead: deque[tuple[int, Future[tuple[Checked, np.ndarray | None]]]] = deque()

        def check_next() -> None:
            index = next(upcoming, None)
            if index is not None:
                ahead.append((index, pool.submit(task, index)))

        for _ in range(workers):
            check_next()
        while ahead:
            index, pending = ahead.popleft()
            verified, buffer = pending.result()
            del pending  # a done future keeps its result: drop it with the caller's copy
            check_next()
            yield index, verified
            del verified  # the caller is done with this update: let it (and its blob) go
            if spares is not None:
                spares.give(buffer)
            del buffer
