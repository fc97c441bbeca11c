"""The aggregator's round: open it, wait for submissions, verify each against the chain, merge, commit.

Which updates exist is read from `UpdateSubmitted` events on chain, never from the nodes. Each
blob is fetched, re-hashed, decoded in the pinned encoding and validated, and its privacy claim
judged when the federation trains with DP (`aggregator.intake`, pipelined over the cores);
every refusal is recorded on chain with its reason, and each node's verified ε in the metadata. The merge gives the bytes of the pure rule
from `ledger.core.aggregation` (FedAvg is folded in as updates are verified, bit-identically); the new
model and a metadata blob naming the rule and metrics are stored, and both hashes are committed
with the Merkle root of the included updates. Failures are results: a round with no valid update
is abandoned on chain, not crashed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from ledger.audit.facts import read_genesis
from ledger.chain import events
from ledger.chain.client import LedgerClient, RoundInfo, RoundState
from ledger.core.errors import LedgerError
from ledger.core.merkle import merkle_root
from ledger.core.metadata import IncludedUpdate, MetadataError, RejectedUpdate, encode_genesis, encode_round
from ledger.core.hashing import sha256_hex
from ledger.core.aggregation import rule_defaults
from ledger.core.policy import DEFAULT_ENCODING, DEFAULT_MAX_NUM_SAMPLES, DEFAULT_RULE, ENCODINGS, FederationPolicy, PrivacyPolicy
from ledger.core.model import load_state, state_tensors
from ledger.core.reasons import AbandonReason, RejectReason
from ledger.core.task import Examples, Task, TaskError, checked_metrics
from ledger.core.manifest import manifest_mismatch, trainable_part, with_frozen
from ledger.core.task_spec import TaskSpec, check_spec
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec
from ledger.core.polling import POLL_SECONDS, WaitTimeout, poll_until
from ledger.chain.rounds import (
    VersionRefused,
    active_nodes,
    chain_now,
    latest_model_hash,
    round_opened_block,
    round_submissions,
    wait_for_verdicts,
)
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.privacy.history import PrivacyBook
from ledger.privacy.judge import ClaimVerdict, Entry, judge_claim
from ledger.store.base import BlobStore, BlobStoreError

from aggregator.intake import Limits, PrivacyCheck, RoundIntake, admit_and_merge

log = logging.getLogger(__name__)

ATTESTATION_TIMEOUT = 120.0  # how long a round waits for auditors to attest its base (quorum > 0 only)


@dataclass(frozen=True)
class AggregatorConfig:
    task: Task = DIGITS_MLP
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # overrides of the task's defaults
    rule: str = DEFAULT_RULE
    rule_params: Mapping[str, Any] = field(default_factory=dict)  # the rule's defaults fill the rest
    min_updates: int = 1
    round_seconds: int = 60
    max_update_bytes: int = 64 * 1024 * 1024
    max_norm: float = 100.0
    max_num_samples: int = DEFAULT_MAX_NUM_SAMPLES  # cap on the sample count an update is weighted by
    model_seed: int = 0
    workers: int = 2  # threads fetching and re-hashing blobs ahead of validation
    encoding: str = DEFAULT_ENCODING
    privacy: PrivacyPolicy | None = None  # node-side DP-SGD and the per-node ε budget; None: no DP

    def __post_init__(self) -> None:
        if self.encoding not in ENCODINGS:
            raise ValueError(f"unknown update encoding {self.encoding!r}; known: {list(ENCODINGS)}")

    @property
    def limits(self) -> Limits:
        return Limits(max_update_bytes=self.max_update_bytes, max_norm=self.max_norm, encoding=self.encoding)

    @property
    def policy(self) -> FederationPolicy:
        """The part of this configuration an auditor re-checks decisions against (pinned at genesis),
        every rule parameter spelled out, defaults included."""
        return FederationPolicy(
            rule=self.rule,
            rule_params={**rule_defaults(self.rule), **self.rule_params},
            max_update_bytes=self.max_update_bytes,
            max_norm=self.max_norm,
            encoding=self.encoding,
            privacy=self.privacy,
            max_num_samples=self.max_num_samples,
        )


class PolicyConflict(LedgerError):
    """The chain's genesis pins another policy than this aggregator was configured with."""


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
    epsilons: Mapping[str, str] = field(default_factory=dict)  # node → verified cumulative ε (DP)
    metrics: Mapping[str, float] = field(default_factory=dict)  # the task's metrics on the held-out data
    abandoned: AbandonReason | None = None  # why the round closed without a model, if it did

    @property
    def committed(self) -> bool:
        return self.model_hash is not None


class Aggregator:
    """The coordinator: its chain client (an aggregator key), a store and the task's held-out test data."""

    def __init__(self, client: LedgerClient, store: BlobStore, test_split: Examples, config: AggregatorConfig) -> None:
        self.client = client
        self.store = store
        self.test_split = test_split
        self.config = config
        self._privacy_book = None if config.privacy is None else PrivacyBook(client, store, config.privacy)

    @cached_property
    def spec(self) -> TaskSpec:
        """This aggregator's task spec: pinned at genesis, or compared with the pinned one."""
        return task_spec(self.config.task, self.config.hyperparameters)

    # ---------------------------------------------------------------- lineage

    def ensure_genesis(self) -> str:
        """The genesis model's hash, committing a freshly initialised model if the chain has none.

        A genesis already on chain must pin this configuration's policy (`PolicyConflict` if not)
        and this aggregator's task spec (`TaskSpecMismatch`, naming the field): every decision is
        re-checked against the pinned ones.
        """
        existing = self.client.genesis_hash()
        if existing is not None:
            try:
                genesis = read_genesis(self.client, self.store)
            except (LookupError, BlobStoreError, MetadataError) as exc:
                raise PolicyConflict(f"cannot read the policy the chain's genesis pins: {exc}") from exc
            if genesis.policy != self.config.policy:
                raise PolicyConflict(
                    f"the chain's genesis pins the policy {genesis.policy.to_json()}; this aggregator was started with "
                    f"{self.config.policy.to_json()}"
                )
            check_spec("aggregator", genesis.task, self.spec)
            return existing
        weights = state_tensors(self.config.task.build_model(self.config.model_seed))
        problem = manifest_mismatch(self.spec, weights)
        if problem is not None:  # a model whose shapes depend on the seed cannot be pinned
            raise TaskError(f"task {self.spec.name!r}: the model built from seed {self.config.model_seed}: {problem}")
        model_hash = self.store.put(serialize_tensors(weights))
        metadata = encode_genesis(seed=self.config.model_seed, policy=self.config.policy, task=self.spec)
        metadata_hash = self.store.put(metadata)
        self.client.commit_genesis(model_hash, metadata_hash)
        return model_hash

    def latest_model(self) -> str:
        return latest_model_hash(self.client)

    # ---------------------------------------------------------------- one round

    def open_round(self) -> RoundInfo:
        """Open the next round on the latest version, with a deadline `round_seconds` from chain time.

        Under an attestation quorum, first wait for the auditors' verdicts on the base:
        `VersionRefused` if they failed it.
        """
        round_number = self.client.counters().last_round + 1
        base = self.latest_model()
        counts = wait_for_verdicts(self.client, base, timeout=ATTESTATION_TIMEOUT)
        if counts.unresolved:
            raise VersionRefused(f"auditors attested version {base} failed: round {round_number} cannot build on it")
        deadline = max(chain_now(self.client), int(time.time())) + self.config.round_seconds
        self.client.open_round(round_number, base, deadline, self.config.min_updates)
        return self.client.get_round(round_number)

    def deadline_passed(self, info: RoundInfo) -> bool:
        return max(chain_now(self.client), int(time.time())) > info.deadline

    def run_round(self) -> RoundResult:
        return self.close_round(self.open_round().round)

    def close_round(self, round_number: int) -> RoundResult:
        """Wait for the round's submissions, check each, record rejections, then finalize (or abandon).

        One loop: each poll reads the round's submissions once, from its `RoundOpened` block. It
        moves on when every active node has submitted or the deadline passed; if too few updates
        are valid to close before the deadline, it waits for another submission or the deadline.
        """
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            raise ValueError(f"round {round_number} is {info.state.name.lower()}, not open")
        assert info.base_model_hash is not None
        opened_block = round_opened_block(self.client, round_number)
        base = deserialize_tensors(self.store.get(info.base_model_hash), max_bytes=self.config.max_update_bytes)
        problem = manifest_mismatch(self.spec, base)
        if problem is not None:
            raise TaskError(f"the base model {info.base_model_hash} does not fit the task's manifest: {problem}")
        # Updates carry only the trainable tensors: they are validated and merged against that part.
        trainable_base = trainable_part(base, self.spec)
        wanted = max(len(active_nodes(self.client)), 1)
        timings: dict[str, float] = {}
        timeout = max(info.deadline - time.time(), 0) + 30
        give_up = time.monotonic() + timeout
        waiting_since = time.perf_counter()
        while True:
            closed = self.deadline_passed(info)  # judged before reading, so no submission can follow it
            submissions = round_submissions(self.client, round_number, from_block=opened_block)
            if closed or len(submissions) >= wanted:
                started = time.perf_counter()
                timings["wait_submissions"] = started - waiting_since - timings.get("verify", 0.0)
                intake = admit_and_merge(
                    self.store,
                    submissions,
                    trainable_base,
                    self.config.limits,
                    rule=self.config.rule,
                    rule_params=self.config.policy.rule_call_params(),
                    workers=self.config.workers,
                    privacy=self._privacy_check(round_number, submissions),
                )
                timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - started
                if closed or len(intake.accepted) >= info.min_updates:
                    return self._finish(info, intake, base, timings)
                wanted = len(submissions) + 1  # too few valid updates: wait for one more, or the deadline
            if time.monotonic() > give_up:
                raise WaitTimeout(f"gave up after {timeout:.1f}s waiting for submissions to round {round_number}")
            time.sleep(POLL_SECONDS)

    def _privacy_check(self, round_number: int, submissions: list[events.UpdateSubmitted]) -> PrivacyCheck | None:
        """Judges each claim against its node's earlier updates (read once here, before the workers start)."""
        policy, book = self.config.privacy, self._privacy_book
        if policy is None or book is None:
            return None
        earlier: Mapping[str, list[Entry]] = book.earlier(round_number, [s.node for s in submissions])

        def check(submission: events.UpdateSubmitted, claim: Mapping[str, Any] | None) -> ClaimVerdict:
            return judge_claim(policy, claim, num_samples=submission.num_samples, earlier=earlier[submission.node])

        return check

    # ---------------------------------------------------------------- commit

    def _finish(
        self, info: RoundInfo, intake: RoundIntake, base: Mapping[str, torch.Tensor], timings: dict[str, float]
    ) -> RoundResult:
        assert info.base_model_hash is not None
        accepted, rejected = intake.accepted, intake.rejected
        started = time.perf_counter()
        for submission, reason, detail in rejected:
            if self.client.rejection_of(info.round, submission.node) == 0:
                log.info("round %d: rejecting %s from %s: %s (%s)", info.round, submission.update_hash, submission.node, reason.name, detail)
                self.client.reject_update(info.round, submission.node, reason)
        timings["chain"] = time.perf_counter() - started
        if not accepted:
            why = AbandonReason.NO_VALID_UPDATES if rejected else AbandonReason.NO_SUBMISSIONS
            return self._abandon(info, why, (), rejected, timings, intake.epsilons)

        started = time.perf_counter()
        weights = with_frozen(intake.weights(), base, self.spec)  # frozen tensors: the base's, bit for bit
        model_blob = serialize_tensors(weights)
        timings["aggregate"] = time.perf_counter() - started
        if self.client.model_of(sha256_hex(model_blob)) is not None:
            # E.g. free-riders returning the base: the chain cannot commit a version twice, so the
            # round closes without one (after its deadline, as the contract requires).
            log.info("round %d: the aggregate is already committed; abandoning the round", info.round)
            return self._abandon(info, AbandonReason.MODEL_UNCHANGED, accepted, rejected, timings, intake.epsilons)
        started = time.perf_counter()
        metrics = self._evaluate(weights)
        timings["aggregate"] += time.perf_counter() - started

        started = time.perf_counter()
        model_hash = self.store.put(model_blob)
        metadata = encode_round(
            round_number=info.round,
            base_model_hash=info.base_model_hash,
            task_spec=self.spec.spec_hash,
            rule=self.config.rule,
            rule_params=self.config.policy.rule_call_params(),
            included=[IncludedUpdate(s.update_hash, s.node, s.num_samples) for s in accepted],
            rejected=[RejectedUpdate(s.update_hash, s.node, int(r), r.name.lower()) for s, r, _ in rejected],
            metrics={**{f"test_{name}": round(value, 6) for name, value in metrics.items()}, "test_samples": len(self.test_split)},
            privacy=None if self.config.privacy is None else intake.epsilons,
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
            accuracy=metrics["accuracy"],
            timings=timings,
            epsilons=intake.epsilons,
            metrics=metrics,
        )

    def _abandon(
        self,
        info: RoundInfo,
        why: AbandonReason,
        valid: tuple[events.UpdateSubmitted, ...],
        rejected: tuple[tuple[events.UpdateSubmitted, RejectReason, str], ...],
        timings: dict[str, float],
        epsilons: Mapping[str, str],
    ) -> RoundResult:
        """Close the round without a model once its deadline has passed (the contract's rule)."""
        assert info.base_model_hash is not None
        poll_until(
            lambda: self.deadline_passed(info),
            timeout=max(info.deadline - time.time(), 0) + 60,
            what=f"the deadline of round {info.round} to pass",
        )
        started = time.perf_counter()
        self.client.abandon_round(info.round, why)
        timings["chain"] = timings.get("chain", 0.0) + time.perf_counter() - started
        return RoundResult(
            info.round, info.base_model_hash, valid, rejected, None, None, None, timings, epsilons, abandoned=why
        )

    def _evaluate(self, weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The task's metrics (at least accuracy and loss) of `weights` on the held-out data."""
        model = self.config.task.build_model(self.config.model_seed)
        load_state(model, weights)
        return checked_metrics(self.config.task, self.config.task.evaluate(model, self.test_split))
