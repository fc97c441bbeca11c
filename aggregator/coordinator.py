"""The aggregator's round: open it, wait for submissions, verify each against the chain, merge, commit.

Which updates exist is read from `UpdateSubmitted` events on chain, never from the nodes. Each
blob is fetched, re-hashed and validated (`aggregator.verification`, pipelined over the cores);
every refusal is recorded on chain with its reason. The merge gives the bytes of the pure rule
from `ledger.aggregation` (FedAvg is folded in as updates are verified, bit-identically); the new
model and a metadata blob naming the rule and metrics are stored, and both hashes are committed
with the Merkle root of the included updates. Failures are results: a round with no valid update
is abandoned on chain, not crashed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from ledger import events
from ledger.client import LedgerClient, RoundInfo, RoundState
from ledger.data import Shard
from ledger.merkle import merkle_root
from ledger.metadata import IncludedUpdate, RejectedUpdate, genesis_metadata, round_metadata
from ledger.model import MODEL_NAME, build_model, evaluate, load_state, state_tensors
from ledger.reasons import AbandonReason, RejectReason
from ledger.polling import poll_until
from ledger.rounds import active_nodes, chain_now, committed_models, round_submissions
from ledger.serialization import deserialize_tensors, serialize_tensors
from ledger.store import ArtifactStore

from aggregator import verification
from aggregator.verification import Limits, RoundIntake, Verified

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AggregatorConfig:
    rule: str = "fedavg"
    rule_params: Mapping[str, Any] = field(default_factory=dict)
    min_updates: int = 1
    round_seconds: int = 60
    max_update_bytes: int = 64 * 1024 * 1024
    max_norm: float = 100.0
    model_seed: int = 0
    workers: int = 2  # threads fetching and re-hashing blobs ahead of validation

    @property
    def limits(self) -> Limits:
        return Limits(max_update_bytes=self.max_update_bytes, max_norm=self.max_norm)


@dataclass(frozen=True)
class RoundResult:
    round: int
    base_model_hash: str
    included: tuple[events.UpdateSubmitted, ...]
    rejected: tuple[tuple[events.UpdateSubmitted, RejectReason, str], ...]
    model_hash: str | None
    metadata_hash: str | None
    accuracy: float | None
    timings: Mapping[str, float]

    @property
    def committed(self) -> bool:
        return self.model_hash is not None


class Aggregator:
    """The coordinator: its chain client (an aggregator key), a store and the held-out test split."""

    def __init__(self, client: LedgerClient, store: ArtifactStore, test_split: Shard, config: AggregatorConfig) -> None:
        self.client = client
        self.store = store
        self.test_split = test_split
        self.config = config

    # ---------------------------------------------------------------- lineage

    def ensure_genesis(self) -> str:
        """The genesis model's hash, committing a freshly initialised model if the chain has none."""
        existing = self.client.genesis_hash()
        if existing is not None:
            return existing
        weights = state_tensors(build_model(self.config.model_seed))
        model_hash = self.store.put(serialize_tensors(weights))
        metadata_hash = self.store.put(genesis_metadata(architecture=MODEL_NAME, seed=self.config.model_seed))
        self.client.commit_genesis(model_hash, metadata_hash)
        return model_hash

    def latest_model(self) -> str:
        versions = committed_models(self.client)
        if not versions:
            raise LookupError("no model committed yet: commit genesis first")
        return versions[-1].model_hash

    # ---------------------------------------------------------------- one round

    def open_round(self) -> RoundInfo:
        """Open the next round on the latest version, with a deadline `round_seconds` from chain time."""
        round_number = self.client.counters().last_round + 1
        deadline = max(chain_now(self.client), int(time.time())) + self.config.round_seconds
        self.client.open_round(round_number, self.latest_model(), deadline, self.config.min_updates)
        return self.client.get_round(round_number)

    def wait_for_submissions(self, round_number: int, *, expected: int | None = None) -> list[events.UpdateSubmitted]:
        """Poll until `expected` submissions (default: every active node) are in or the deadline passed."""
        info = self.client.get_round(round_number)
        want = expected if expected is not None else max(len(active_nodes(self.client)), 1)

        def ready() -> tuple[list[events.UpdateSubmitted]] | None:
            submissions = round_submissions(self.client, round_number)
            if len(submissions) >= want or self.deadline_passed(info):
                return (submissions,)  # a tuple, so an empty list still ends the wait
            return None

        timeout = max(info.deadline - time.time(), 0) + 30
        (found,) = poll_until(ready, timeout=timeout, what=f"submissions to round {round_number}")
        return found

    def deadline_passed(self, info: RoundInfo) -> bool:
        return max(chain_now(self.client), int(time.time())) > info.deadline

    def close_round(self, round_number: int) -> RoundResult:
        """Verify every submission, record rejections, then finalize (or abandon) the round."""
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            raise ValueError(f"round {round_number} is {info.state.name.lower()}, not open")
        assert info.base_model_hash is not None
        timings: dict[str, float] = {}
        started = time.perf_counter()
        base = deserialize_tensors(self.store.get(info.base_model_hash), max_bytes=self.config.max_update_bytes)
        # Verification and (for FedAvg) the merge itself happen here, update by update.
        intake = verification.verify_and_merge(
            self.store,
            round_submissions(self.client, round_number),
            base,
            self.config.limits,
            rule=self.config.rule,
            rule_params=self.config.rule_params,
            workers=self.config.workers,
        )
        timings["verify"] = time.perf_counter() - started

        started = time.perf_counter()
        for submission, reason, detail in intake.rejected:
            if self.client.rejection_of(round_number, submission.node) == 0:
                log.info("round %d: rejecting %s from %s: %s (%s)", round_number, submission.update_hash, submission.node, reason.name, detail)
                self.client.reject_update(round_number, submission.node, reason)
        timings["chain"] = time.perf_counter() - started

        if len(intake.accepted) < info.min_updates and not self.deadline_passed(info):
            # Too few valid updates to close early: the chain only allows it after the deadline.
            wait_started = time.perf_counter()
            poll_until(lambda: self.deadline_passed(info), timeout=info.deadline - time.time() + 30, what="the deadline")
            timings["wait_deadline"] = time.perf_counter() - wait_started
            seen = len(intake.accepted) + len(intake.rejected)
            return self.close_round(round_number) if self._new_submissions(round_number, seen) else self._finish(
                info, intake, timings
            )
        return self._finish(info, intake, timings)

    def run_round(self) -> RoundResult:
        info = self.open_round()
        self.wait_for_submissions(info.round)
        return self.close_round(info.round)

    # ---------------------------------------------------------------- verification

    def verify_all(self, round_number: int, base: Mapping[str, torch.Tensor]) -> list[Verified]:
        """Every submission of the round verified, in chain order (accepted verdicts hold the tensors)."""
        submissions = round_submissions(self.client, round_number)
        verdicts = dict(
            verification.verified_in_merge_order(
                self.store, submissions, base, self.config.limits, workers=self.config.workers
            )
        )
        return [verdicts[index] for index in range(len(submissions))]

    def verify(self, submission: events.UpdateSubmitted, base: Mapping[str, torch.Tensor]) -> Verified:
        """Fetch, re-hash and validate one update; every failure becomes a `Rejected` verdict."""
        return verification.verify(self.store, submission, base, self.config.limits)

    def _new_submissions(self, round_number: int, seen: int) -> bool:
        return len(round_submissions(self.client, round_number)) > seen

    # ---------------------------------------------------------------- commit

    def _finish(self, info: RoundInfo, intake: RoundIntake, timings: dict[str, float]) -> RoundResult:
        assert info.base_model_hash is not None
        accepted, rejected = intake.accepted, intake.rejected
        if not accepted:
            reason = AbandonReason.NO_VALID_UPDATES if rejected else AbandonReason.NO_SUBMISSIONS
            started = time.perf_counter()
            self.client.abandon_round(info.round, reason)
            timings["chain"] = timings.get("chain", 0.0) + time.perf_counter() - started
            return RoundResult(info.round, info.base_model_hash, (), rejected, None, None, None, timings)

        started = time.perf_counter()
        weights = intake.weights()
        accuracy = self._evaluate(weights)
        timings["aggregate"] = time.perf_counter() - started

        started = time.perf_counter()
        model_hash = self.store.put(serialize_tensors(weights))
        metadata = round_metadata(
            round_number=info.round,
            base_model_hash=info.base_model_hash,
            architecture=MODEL_NAME,
            rule=self.config.rule,
            rule_params=self.config.rule_params,
            included=[IncludedUpdate(s.update_hash, s.node, s.num_samples) for s in accepted],
            rejected=[RejectedUpdate(s.update_hash, s.node, int(r), r.name.lower()) for s, r, _ in rejected],
            metrics={"test_accuracy": round(accuracy, 6), "test_samples": len(self.test_split)},
        )
        metadata_hash = self.store.put(metadata)
        timings["store"] = time.perf_counter() - started

        started = time.perf_counter()
        included_hashes = [bytes.fromhex(s.update_hash) for s in accepted]
        self.client.finalize_round(info.round, model_hash, merkle_root(included_hashes), len(accepted), metadata_hash)
        timings["chain"] = timings.get("chain", 0.0) + time.perf_counter() - started
        return RoundResult(
            round=info.round,
            base_model_hash=info.base_model_hash,
            included=accepted,
            rejected=rejected,
            model_hash=model_hash,
            metadata_hash=metadata_hash,
            accuracy=accuracy,
            timings=timings,
        )

    def _evaluate(self, weights: Mapping[str, torch.Tensor]) -> float:
        model = build_model(self.config.model_seed)
        load_state(model, weights)
        return evaluate(model, self.test_split.x, self.test_split.y)
