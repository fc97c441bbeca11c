"""The aggregator's round: open it, wait for submissions, verify each against the chain, merge, commit.

Which updates exist is read from `UpdateSubmitted` events on chain, never from the nodes. Each
blob is fetched, re-hashed, decoded in the pinned encoding and validated, and its privacy claim
judged when the federation trains with DP (`aggregator.intake`, pipelined over the cores);
every refusal is recorded on chain with its reason, and each node's verified ε in the metadata. The merge gives the bytes of the pure rule
from `ledger.core.aggregation` (FedAvg is folded in as updates are verified, bit-identically); the new
model and a metadata blob naming the rule and metrics are stored, and both hashes are committed
with the Merkle root of the included updates. Failures are results: a round with no valid update,
or whose valid updates the rule refuses (Krum with too few), is abandoned on chain after its
deadline with the reason, not crashed.

Deadlines are judged by chain time only (`ledger.chain.clock`): the round "closes" when the
latest block is past its deadline, and the transactions that need that (abandon, finalize below
quorum) are sent only then.

Resuming: every step is idempotent against the chain, so `run` picks up whatever the chain says
after a crash at any point. An open round is closed (its submissions re-read, rejections already
on chain kept and never sent again, the merge re-done deterministically, committed once: the
contract accepts one finalize per round); genesis is never committed twice.
"""

from __future__ import annotations

import logging
import math
import dataclasses
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from ledger.audit.facts import PolicyBook, read_genesis
from ledger.chain import errors, events
from ledger.chain.client import AttestationCounts, LedgerClient, RoundInfo, RoundState
from ledger.chain.clock import ChainClock
from ledger.chain.follow import LedgerFollower, NewHeads, of_type
from ledger.chain.rounds import (
    NodeSet,
    VersionRefused,
    committed_models,
    latest_model_hash,
    registered_nodes,
    round_opened_block,
    round_rejections,
    round_submissions,
    round_topic,
    wait_for_verdicts,
)
from ledger.core.errors import LedgerError
from ledger.core.aggregation import rule_defaults
from ledger.core.hashing import sha256_hex
from ledger.core.manifest import manifest_mismatch, trainable_part, with_frozen
from ledger.core.merkle import merkle_root
from ledger.core.metadata import IncludedUpdate, MetadataError, RejectedUpdate, RoundRecord, decode, encode_genesis, encode_round
from ledger.core.model import load_state, state_tensors
from ledger.core.policy import DEFAULT_ENCODING, DEFAULT_MAX_NUM_SAMPLES, DEFAULT_RULE, ENCODINGS, FederationPolicy, PrivacyPolicy
from ledger.core.polling import POLL_SECONDS
from ledger.core.progress import report
from ledger.core.reasons import AbandonReason, RejectReason
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.core.task import Examples, Task, TaskError, checked_metrics
from ledger.core.task_spec import TaskSpec, check_spec
from ledger.privacy.history import PrivacyBook
from ledger.privacy.judge import ClaimVerdict, Entry, judge_claim
from ledger.store.base import BlobStore, BlobStoreError, BufferedBlobStore
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec

from aggregator.intake import Limits, PrivacyCheck, admit_and_merge
from aggregator.prefetch import Prefetcher

log = logging.getLogger(__name__)

class RoundVanished(LedgerError):
    """The round this process was closing is gone: the chain restarted from a state before its opening."""


WAITING_REPORT_SECONDS = 10.0
MIN_ROUND_SECONDS = 60  # room for the nodes' training
# Before a round has been measured: submissions per second this project's 2-core devnet takes in.
ASSUMED_SUBMISSIONS_PER_SECOND = 16.0


def round_window(nodes: int, submissions_per_second: float) -> int:
    """Seconds a round stays open: a minute for training, plus twice the time the chain needs to
    take in every registered node's submission at the rate it last showed (so 10,000 nodes get
    ~21 minutes at 16 submissions/s instead of a minute that fits fewer than a thousand)."""
    return MIN_ROUND_SECONDS + math.ceil(2 * max(nodes, 1) / max(submissions_per_second, 0.1))  # while nothing changes, say how the round stands this often
Rejection = tuple[events.UpdateSubmitted, RejectReason, str]


@dataclass(frozen=True)
class AggregatorConfig:
    task: Task = DIGITS_MLP
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)  # overrides of the task's defaults
    rule: str = DEFAULT_RULE
    rule_params: Mapping[str, Any] = field(default_factory=dict)  # the rule's defaults fill the rest
    min_updates: int = 1
    # None: sized from the federation at each opening (`round_window`); a number overrides it.
    round_seconds: int | None = None
    max_update_bytes: int = 64 * 1024 * 1024
    max_norm: float = 100.0
    max_num_samples: int | None = DEFAULT_MAX_NUM_SAMPLES  # cap on the sample count an update is weighted by
    model_seed: int = 0
    workers: int = 2  # threads fetching and re-hashing blobs ahead of validation
    # Bytes of updates fetched while the round is open, so closing it does not wait on the store.
    prefetch_bytes: int = 64 * 1024 * 1024
    poll_seconds: float = POLL_SECONDS
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
    """The chain pins another policy for the round than this aggregator was configured with, in a
    part it cannot take over by itself (the encoding or the privacy policy: nodes follow those)."""


# What the aggregator alone applies: a change of these is taken over at a round's open, not refused.
_APPLIED_HERE = ("rule", "rule_params", "max_update_bytes", "max_norm", "max_num_samples")


def _restart_hint(field_name: str, pinned: Any) -> str:
    """The `aggregator run` options that configure `pinned` (encoding or privacy)."""
    if field_name == "encoding":
        return f"--encoding {pinned}"
    if pinned is None:
        return "no --dp-* options"
    privacy: PrivacyPolicy = pinned
    return (
        f"--dp-noise-multiplier {privacy.noise_multiplier!r} --dp-max-grad-norm {privacy.max_grad_norm!r} "
        f"--dp-delta {privacy.delta!r} --dp-epsilon-budget {privacy.epsilon_budget} "
        f"--dp-batch-size {privacy.batch_size} --dp-epochs {privacy.epochs}"
    )


@dataclass(frozen=True)
class RoundResult:
    round: int
    base_model_hash: str
    included: tuple[events.UpdateSubmitted, ...]
    rejected: tuple[Rejection, ...]
    model_hash: str | None
    metadata_hash: str | None
    accuracy: float | None
    timings: Mapping[str, float]
    abandon_reason: AbandonReason | None = None
    # True when the round had already closed on chain before this process looked (a restart
    # found a finalize or abandon that an earlier run had sent).
    found_closed: bool = False
    epsilons: Mapping[str, str] = field(default_factory=dict)  # node → verified cumulative ε (DP)
    metrics: Mapping[str, float] = field(default_factory=dict)  # the task's metrics on the held-out data

    @property
    def committed(self) -> bool:
        return self.model_hash is not None


@dataclass(frozen=True)
class _Decision:
    """What the round's submissions allow right now: finish (with weights or not), or wait."""

    accepted: tuple[events.UpdateSubmitted, ...]
    rejected: tuple[Rejection, ...]
    weights: dict[str, torch.Tensor] | None  # the new model (frozen tensors the base's), if the rule gave one
    model_blob: bytes | None  # its canonical bytes
    # Why the valid updates give no new version (yet): the rule refused them, or their aggregate
    # is a version the chain already holds. Either way the round waits for more or its deadline.
    refusal: tuple[AbandonReason, str] | None
    epsilons: Mapping[str, str]
    recorded: frozenset[str]  # nodes whose rejection was already on chain (sent before a restart)
    timings: Mapping[str, float]  # the intake's seconds per phase (fetch_rehash, validate, merge)


class Aggregator:
    """The coordinator: its chain client (an aggregator key), a store and the task's held-out test data."""

    def __init__(
        self,
        client: LedgerClient,
        store: BlobStore,
        test_split: Examples,
        config: AggregatorConfig,
        *,
        clock: ChainClock | None = None,
        heads: NewHeads | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.test_split = test_split
        self.config = config
        self.clock = clock or ChainClock(client.w3, poll_seconds=config.poll_seconds)
        self._heads = heads  # what wakes the waits (None: a newHeads subscription, or polling)
        # Kept up to date from new blocks only (see `_following`): nothing here re-reads history per poll.
        self._follower: LedgerFollower | None = None
        self._nodes = NodeSet()
        self._opened_blocks: dict[int, int] = {}
        self._latest: str | None = None  # the newest committed version's hash, once read
        self._submission_rate = ASSUMED_SUBMISSIONS_PER_SECOND  # measured again at each round's close
        self._privacy_book = None if config.privacy is None else PrivacyBook(client, store, config.privacy)
        self._policies = PolicyBook(client, store)  # the policy in force, read from new blocks only

    @cached_property
    def spec(self) -> TaskSpec:
        """This aggregator's task spec: pinned at genesis, or compared with the pinned one."""
        return task_spec(self.config.task, self.config.hyperparameters)

    # ---------------------------------------------------------------- lineage

    def ensure_genesis(self) -> str:
        """The genesis model's hash, committing a freshly initialised model if the chain has none.

        Deterministic (the model seed fixes the bytes), so a crash before the commit's receipt
        just makes the restart store the same blobs and find, or send, the same commit. A genesis
        already on chain must pin this aggregator's task spec (`TaskSpecMismatch`, naming the field),
        and the policy in force for the next round must be this configuration's (`follow_policy`):
        every decision is re-checked against the pinned ones.
        """
        existing = self.client.genesis_hash()
        if existing is not None:
            try:
                genesis = read_genesis(self.client, self.store)
            except (LookupError, BlobStoreError, MetadataError) as exc:
                raise PolicyConflict(f"cannot read the policy the chain's genesis pins: {exc}") from exc
            check_spec("aggregator", genesis.task, self.spec)
            # A round open on chain runs under the same policy as the next would: setPolicy needs no round open.
            self.follow_policy(self.client.counters().last_round + 1)
            return existing
        weights = state_tensors(self.config.task.build_model(self.config.model_seed))
        problem = manifest_mismatch(self.spec, weights)
        if problem is not None:  # a model whose shapes depend on the seed cannot be pinned
            raise TaskError(f"task {self.spec.name!r}: the model built from seed {self.config.model_seed}: {problem}")
        model_hash = self.store.put(serialize_tensors(weights))
        metadata_hash = self.store.put(encode_genesis(seed=self.config.model_seed, policy=self.config.policy, task=self.spec))
        try:
            self.client.commit_genesis(model_hash, metadata_hash)
        except errors.GenesisAlreadyCommitted:  # our own earlier commit landed after all
            pass
        committed = self.client.genesis_hash()
        assert committed is not None
        report(log, "genesis", "committed genesis {model_hash}", model_hash=committed)
        return committed

    def follow_policy(self, round_number: int) -> None:
        """Run round `round_number` under the policy the chain has in force for it, as auditors judge it.

        A change is an explicit event (`setPolicy`), never this process's choice: rule, parameters and
        limits are taken over (a progress line says so); a different encoding or privacy policy, which
        nodes follow too, is `PolicyConflict` naming the first differing field and the options to restart with.
        """
        try:
            pinned = self._policies.in_force(round_number)
        except (LookupError, BlobStoreError, MetadataError) as exc:
            raise PolicyConflict(f"cannot read the policy in force for round {round_number}: {exc}") from exc
        mine = self.config.policy
        if pinned.policy == mine:
            return
        differing = [f.name for f in dataclasses.fields(mine) if getattr(mine, f.name) != getattr(pinned.policy, f.name)]
        refused = [name for name in differing if name not in _APPLIED_HERE]
        if refused:
            name = refused[0]
            value = getattr(pinned.policy, name)
            shown = value.to_json() if isinstance(value, PrivacyPolicy) else value
            raise PolicyConflict(
                f"round {round_number} runs under the policy of {pinned.source}, which differs from this aggregator's in "
                f"{name}: the chain pins {{{name!r}: {shown!r}}}; restart the aggregator with {_restart_hint(name, value)}"
            )
        policy = pinned.policy
        self.config = dataclasses.replace(
            self.config,
            rule=policy.rule,
            rule_params=dict(policy.rule_params),
            max_update_bytes=policy.max_update_bytes,
            max_norm=policy.max_norm,
            max_num_samples=policy.max_num_samples,
        )
        report(
            log,
            "policy_applied",
            "round {round}: applying the policy of {source} (differs in {fields})",
            round=round_number,
            source=pinned.source,
            fields=", ".join(differing),
        )

    def latest_model(self) -> str:
        """The newest committed version: read once, then kept current from the follower's blocks
        (and this process's own commits), so the round loop never re-reads the chain's history."""
        follower = self._following()
        self._track(follower.read())
        if self._latest is None:
            self._latest = latest_model_hash(self.client)
        return self._latest

    # ---------------------------------------------------------------- the loop

    def run(self, last_round: int, on_result: Callable[[RoundResult], None]) -> None:
        """Close rounds until round `last_round` has closed, resuming from whatever the chain says."""
        self.ensure_genesis()
        while True:
            current = self.client.counters().last_round
            if current and self.client.get_round(current).state is RoundState.OPEN:
                report(log, "resume", "round {round}: open on chain; picking it up", round=current)
                self.follow_policy(current)
                try:
                    on_result(self.close_round(current))
                except RoundVanished as exc:
                    report(log, "vanished", "{error}; reading the chain again", error=exc)
            elif current >= last_round:
                return
            else:
                try:
                    on_result(self.run_round())
                except RoundVanished as exc:
                    report(log, "vanished", "{error}; reading the chain again", error=exc)

    # ---------------------------------------------------------------- one round

    def open_round(self) -> RoundInfo:
        """Open the next round on the latest version, with a deadline `round_seconds` of chain time away.

        Under an attestation quorum, first wait for the auditors' verdicts on the base (`await_verdicts`):
        `VersionRefused` if they failed it.
        """
        round_number = self.client.counters().last_round + 1
        self.follow_policy(round_number)
        base = self.latest_model()
        counts = self.await_verdicts(base)
        if counts.unresolved:
            raise VersionRefused(f"auditors attested version {base} failed: round {round_number} cannot build on it")
        opened_at = self.clock.next_timestamp()
        self._following()  # the node set the window is sized from
        window = self.config.round_seconds or round_window(len(self._nodes), self._submission_rate)
        deadline = opened_at + window
        try:
            opened = self.client.open_round(round_number, base, deadline, self.config.min_updates)
            self._opened_blocks[round_number] = opened.block_number
        except (errors.RoundOutOfOrder, errors.RoundStillOpen):  # our own earlier open landed after all
            round_number = self.client.counters().last_round
            info = self.client.get_round(round_number)
        else:
            info = RoundInfo(round_number, base, deadline, self.config.min_updates, RoundState.OPEN)
        report(
            log,
            "round_opened",
            "round {round}: opened on {base}…, {seconds} s to submit (deadline {deadline}, chain time)",
            round=round_number,
            base=(info.base_model_hash or "")[:12],
            seconds=info.deadline - opened_at,
            deadline=info.deadline,
        )
        return info

    def run_round(self) -> RoundResult:
        return self.close_round(self.open_round().round)

    def close_round(self, round_number: int) -> RoundResult:
        """Wait for the round's submissions, check each, record rejections, then finalize (or abandon).

        One loop, woken by each new block (`ledger.chain.follow`): each pass takes the new blocks'
        events (submissions, node registrations) and judges the deadline against the last of those
        blocks, so no submission can follow a "closed". It moves on when every active node has
        submitted (save those whose next update would exceed the privacy budget: by the nodes' own
        rule they publish nothing) or the deadline passed; if too few updates are valid (or the rule
        refuses them) before the deadline, it waits for another submission or the deadline. Nothing
        re-reads the chain's history while it waits.
        """
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            return self._closed_result(info)
        assert info.base_model_hash is not None
        base_blob = self.store.get(info.base_model_hash)
        base = deserialize_tensors(base_blob, max_bytes=self.config.max_update_bytes)
        problem = manifest_mismatch(self.spec, base)
        if problem is not None:
            raise TaskError(f"the base model {info.base_model_hash} does not fit the task's manifest: {problem}")
        follower = self._following()
        # Updates are fetched as their submissions land, within a byte budget (a local folder needs
        # no fetching ahead: the intake reads it in place).
        fetch_ahead = not isinstance(self.store, BufferedBlobStore)
        prefetch = Prefetcher(self.store, budget_bytes=self.config.prefetch_bytes, workers=self.config.workers) if fetch_ahead else None
        try:
            return self._close(info, base, follower, prefetch)
        finally:
            if prefetch is not None:
                prefetch.close()

    def _close(
        self,
        info: RoundInfo,
        base: Mapping[str, torch.Tensor],
        follower: LedgerFollower,
        prefetch: Prefetcher | None,
    ) -> RoundResult:
        round_number = info.round
        opened_block = self._opened_blocks.pop(round_number, None)
        if opened_block is None:  # a round this process did not open (a restart): find it once
            opened_block = round_opened_block(self.client, round_number)
        # What happened before we started following: read once, up to the follower's cursor.
        submissions, recorded = self._round_so_far(round_number, opened_block, follower.cursor)
        timings: dict[str, float] = {}
        waiting_since = time.perf_counter()
        shown: tuple[int, float] | None = None
        shown_at = 0.0
        rewinds = follower.rewinds
        landed = list(submissions.values())  # submissions not yet handed to the prefetcher
        wanted = 0
        found = follower.read()
        spent = self._spent_nodes(round_number)
        while True:
            if follower.rewinds != rewinds:  # a reorg, or a devnet restarted from an older state
                rewinds = follower.rewinds
                self.clock.forget()
                self._latest = None
                still_open = self._still_open(round_number)
                if still_open is None:
                    return self._closed_result(self.client.get_round(round_number))
                info = still_open
                # What we gathered may be gone: the round's facts are read again from the chain.
                opened_block = round_opened_block(self.client, round_number)
                submissions, recorded = self._round_so_far(round_number, opened_block, follower.cursor)
                self._nodes = registered_nodes(self.client, to_block=follower.cursor)
                landed = list(submissions.values())
                wanted = 0
                spent = self._spent_nodes(round_number)
            self._track(found)
            for event in of_type(found, events.UpdateSubmitted, events.UpdateRejected):
                if event.round != round_number:
                    continue
                if isinstance(event, events.UpdateRejected):
                    recorded[event.node] = event.reason_code
                    continue
                submissions[event.node] = event
                landed.append(event)
            if prefetch is not None:
                prefetch.add(landed)  # fetched while the round stays open
            landed = []
            # A node that has spent its privacy budget will not publish: it is not waited for.
            expected = max(sum(1 for node in self._nodes if node not in spent), 1)
            submitted = sum(1 for node in submissions if node not in spent)
            wanted = max(wanted, expected)
            # Judged on the last block whose events we hold: no submission can follow a block past it.
            closed = self.clock.timestamp_of(follower.cursor) > info.deadline
            if closed or submitted >= wanted:
                self._measure_rate(opened_block, submissions.values())
                started = time.perf_counter()
                timings["wait_submissions"] = started - waiting_since - timings.get("verify", 0.0)
                in_order = sorted(submissions.values(), key=lambda e: (e.ref.block_number, e.ref.log_index))
                store = prefetch.finish() if prefetch is not None else self.store
                decision = self._decide(round_number, in_order, recorded, base, store)
                timings["verify"] = timings.get("verify", 0.0) + time.perf_counter() - started
                for phase, seconds in decision.timings.items():
                    timings[phase] = timings.get(phase, 0.0) + seconds
                enough = len(decision.accepted) >= info.min_updates and decision.refusal is None
                if closed or enough:
                    return self._finish(info, decision, timings)
                if decision.refusal is not None:
                    why, detail = decision.refusal
                    report(log, why.name.lower(), "round {round}: {detail}; waiting for more updates or the deadline",
                           round=round_number, detail=detail)
                wanted = submitted + 1  # too few valid updates: wait for one more, or the deadline
            upcoming = self.clock.next_timestamp()
            left = max(info.deadline - upcoming, 0)
            state = (len(submissions), left // WAITING_REPORT_SECONDS)
            if state != shown or time.monotonic() - shown_at >= WAITING_REPORT_SECONDS:
                report(log, "waiting", "round {round}: {submitted}/{expected} submitted, {left} s left",
                       round=round_number, submitted=len(submissions), expected=expected, left=left)
                shown, shown_at = state, time.monotonic()
            self.clock.advance_past(info.deadline, next_timestamp=upcoming)
            # Until the next block, or until the deadline could be passed (then a devnet block is mined).
            timeout = min(WAITING_REPORT_SECONDS, max(left, self.config.poll_seconds))
            head = follower.heads.wait(after=follower.cursor, timeout=timeout)
            read_started = time.perf_counter()
            found = follower.read_to(head)
            timings["event_reads"] = time.perf_counter() - read_started  # the last read: the one the round closes on

    def _spent_nodes(self, round_number: int) -> frozenset[str]:
        """The active nodes that have spent their privacy budget (named once in the progress line)."""
        if self._privacy_book is None:
            return frozenset()
        spent = self._privacy_book.spent(round_number, self._nodes)
        if spent:
            report(
                log,
                "budget_spent",
                "round {round}: waiting for {expected} nodes ({count} "
                + ("has" if len(spent) == 1 else "have")
                + " spent their privacy budget: {nodes})",
                round=round_number,
                expected=len(self._nodes) - len(spent),
                count=len(spent),
                nodes=", ".join(spent),
            )
        return frozenset(spent)

    def _round_so_far(
        self, round_number: int, opened_block: int, to_block: int
    ) -> tuple[dict[str, events.UpdateSubmitted], dict[str, int]]:
        """The round's submissions (by node) and the rejections already on chain, up to `to_block`."""
        if opened_block > to_block:
            return {}, {}
        submissions = {s.node: s for s in round_submissions(self.client, round_number, from_block=opened_block, to_block=to_block)}
        recorded = {r.node: r.reason_code for r in round_rejections(self.client, round_number, from_block=opened_block, to_block=to_block)}
        return submissions, recorded

    def _measure_rate(self, opened_block: int, submissions: Iterable[events.UpdateSubmitted]) -> None:
        """Submissions per second of chain time this round showed (from its opening to its last one)."""
        landed = sorted({s.ref.block_number for s in submissions})
        if len(landed) >= 3:
            seconds = self.clock.timestamp_of(landed[-1]) - self.clock.timestamp_of(opened_block)
            self._submission_rate = min(max(len(landed) / max(seconds, 1), 0.1), 10_000.0)

    def await_verdicts(self, model_hash: str) -> AttestationCounts:
        """The auditors' counts on `model_hash` once a round may build on it or one failed it
        (`chain.rounds.wait_for_verdicts`, woken by this aggregator's follower, in chain time)."""
        return wait_for_verdicts(self.client, model_hash, follower=self._following(), clock=self.clock, seen=self._track)

    def _track(self, found: list[events.LedgerEvent]) -> None:
        """Keep the node set and the newest version current from events the follower handed out."""
        self._nodes.apply(found)
        commits = of_type(found, events.ModelCommitted)
        if commits and self._latest is not None:
            self._latest = commits[-1].model_hash

    def _following(self) -> LedgerFollower:
        """The follower over this ledger's new blocks (and the node set as of its cursor)."""
        if self._follower is None:
            self._follower = LedgerFollower.from_head(self.client.w3, self.client.address, heads=self._heads)
            self._nodes = registered_nodes(self.client, to_block=self._follower.cursor)
        return self._follower

    def _still_open(self, round_number: int) -> RoundInfo | None:
        """The round's record after the chain went back: None if it closed, `RoundVanished` if it is gone."""
        info = self.client.get_round(round_number)
        if info.state is RoundState.NONE:
            raise RoundVanished(f"round {round_number} is no longer on the chain (restarted from an older state?)")
        return info if info.state is RoundState.OPEN else None

    def _decide(
        self,
        round_number: int,
        submissions: list[events.UpdateSubmitted],
        recorded: Mapping[str, int],
        base: Mapping[str, torch.Tensor],
        store: BlobStore,
    ) -> _Decision:
        """Verify the submissions not yet rejected on chain and try the rule on the valid ones.

        A rejection already on chain (sent before a restart) is final: that update is neither
        fetched again nor ever included, but it still counts as the first submission of its hash,
        so a later copy is a duplicate_update after a restart just as before it.
        """
        fresh = [s for s in submissions if s.node not in recorded]
        intake = admit_and_merge(
            store,
            submissions,
            trainable_part(base, self.spec),  # updates carry only the trainable tensors
            self.config.limits,
            rule=self.config.rule,
            rule_params=self.config.policy.rule_call_params(),
            workers=self.config.workers,
            privacy=self._privacy_check(round_number, fresh),
            settled=frozenset(recorded),
        )
        found = {s.node: (r, d) for s, r, d in intake.rejected}
        for node, code in recorded.items():
            found[node] = (RejectReason(code), "recorded on chain before a restart")
        rejected = tuple((s, *found[s.node]) for s in submissions if s.node in found)
        reasons = ", ".join(sorted({reason.name.lower() for _, reason, _ in rejected}))
        report(
            log,
            "verified",
            "round {round}: verified {accepted}, rejected {rejected}" + (f" ({reasons})" if reasons else ""),
            round=round_number,
            accepted=len(intake.accepted),
            rejected=len(rejected),
            reasons=reasons,
        )
        timings = dict(intake.timings)
        weights, blob, refusal = None, None, None
        if intake.accepted:
            started = time.perf_counter()
            try:
                weights = with_frozen(intake.weights(), base, self.spec)  # frozen tensors: the base's, bit for bit
            except ValueError as exc:  # e.g. Krum with fewer than 2f + 3 valid updates
                detail = f"rule {self.config.rule} refused the {len(intake.accepted)} valid updates: {exc}"
                refusal = (AbandonReason.RULE_REFUSED, detail)
            timings["merge_result"] = time.perf_counter() - started
        if weights is not None:
            blob = serialize_tensors(weights)
            if self.client.model_of(sha256_hex(blob)) is not None:
                # E.g. free-riders returning a committed version: the chain cannot commit it twice.
                refusal = (AbandonReason.MODEL_UNCHANGED, "the aggregate is a version the chain already holds")
        return _Decision(intake.accepted, rejected, weights, blob, refusal, intake.epsilons, frozenset(recorded), timings)

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

    def _finish(self, info: RoundInfo, decision: _Decision, timings: dict[str, float]) -> RoundResult:
        """Record the rejections, and meanwhile merge, evaluate and store the model; then finalize (or abandon).

        The rejections are chain writes and the rest is local work and uploads: they meet only at
        `finalizeRound` (which closes the round to rejections), so they run side by side.
        """
        assert info.base_model_hash is not None
        accepted, rejected = decision.accepted, decision.rejected
        pending = [rejection for rejection in rejected if rejection[0].node not in decision.recorded]
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="rejections") as chain:
            recording = chain.submit(self._record_rejections, info.round, pending, timings)
            stored = self._store_model(info, decision, timings) if decision.refusal is None and decision.weights is not None else None
            started = time.perf_counter()
            recording.result()
            timings["rejections_wait"] = time.perf_counter() - started
        timings["chain"] = timings["rejections"]
        if stored is None:
            if decision.refusal is not None:
                why = decision.refusal[0]
            else:
                why = AbandonReason.NO_VALID_UPDATES if rejected else AbandonReason.NO_SUBMISSIONS
            started = time.perf_counter()
            self._abandon(info.round, why)
            timings["chain"] += time.perf_counter() - started
            return RoundResult(
                info.round, info.base_model_hash, (), rejected, None, None, None, timings,
                abandon_reason=why, epsilons=decision.epsilons,
            )  # fmt: skip

        model_hash, metadata_hash, metrics = stored
        started = time.perf_counter()
        included_hashes = [bytes.fromhex(s.update_hash) for s in accepted]
        try:
            finalized = self.client.finalize_round(info.round, model_hash, merkle_root(included_hashes), len(accepted), metadata_hash)
        except errors.RoundNotOpen:  # closed meanwhile: by our own finalize sent before a restart, or by hand
            timings["chain"] = timings.get("chain", 0.0) + time.perf_counter() - started
            return self._closed_result(self.client.get_round(info.round))
        timings["chain"] = timings.get("chain", 0.0) + time.perf_counter() - started
        commit = of_type(finalized.events, events.ModelCommitted)
        self._latest = model_hash
        report(
            log,
            "committed",
            "round {round}: committed v{version} {model_hash} ({included} included, {rejected} rejected)",
            round=info.round,
            version=commit[0].version if commit else "?",
            model_hash=model_hash,
            included=len(accepted),
            rejected=len(rejected),
        )
        return RoundResult(
            round=info.round,
            base_model_hash=info.base_model_hash,
            included=accepted,
            rejected=rejected,
            model_hash=model_hash,
            metadata_hash=metadata_hash,
            accuracy=metrics["accuracy"],
            timings=timings,
            epsilons=decision.epsilons,
            metrics=metrics,
        )

    def _store_model(self, info: RoundInfo, decision: _Decision, timings: dict[str, float]) -> tuple[str, str, dict[str, float]]:
        """Evaluate, and store the model and its metadata: (model hash, metadata hash, metrics)."""
        assert info.base_model_hash is not None and decision.weights is not None and decision.model_blob is not None
        started = time.perf_counter()
        metrics = self._evaluate(decision.weights)
        timings["evaluate"] = time.perf_counter() - started
        timings["aggregate"] = timings.get("merge_result", 0.0) + timings["evaluate"]

        started = time.perf_counter()
        model_hash = self.store.put(decision.model_blob)
        metadata = encode_round(
            round_number=info.round,
            base_model_hash=info.base_model_hash,
            task_spec=self.spec.spec_hash,
            rule=self.config.rule,
            rule_params=self.config.policy.rule_call_params(),
            included=[IncludedUpdate(s.update_hash, s.node, s.num_samples) for s in decision.accepted],
            rejected=[RejectedUpdate(s.update_hash, s.node, int(r), r.name.lower()) for s, r, _ in decision.rejected],
            metrics={**{f"test_{name}": round(value, 6) for name, value in metrics.items()}, "test_samples": len(self.test_split)},
            privacy=None if self.config.privacy is None else decision.epsilons,
        )
        metadata_hash = self.store.put(metadata)
        timings["store"] = time.perf_counter() - started
        return model_hash, metadata_hash, metrics

    def _record_rejections(self, round_number: int, pending: Sequence[Rejection], timings: dict[str, float]) -> None:
        """Put each rejection not yet on chain there with its reason, sent back to back (one wait for
        all receipts); if one of ours from before a restart landed meanwhile, one by one, skipping it."""
        started = time.perf_counter()
        for submission, reason, detail in pending:
            log.debug("round %d: rejecting %s from %s: %s (%s)", round_number, submission.update_hash, submission.node, reason.name, detail)
        try:
            self.client.reject_updates(round_number, [(submission.node, reason) for submission, reason, _ in pending])
        except errors.AlreadyRejected:
            for submission, reason, detail in pending:
                self._reject(round_number, submission, reason, detail)
        timings["rejections"] = time.perf_counter() - started

    def _reject(self, round_number: int, submission: events.UpdateSubmitted, reason: RejectReason, detail: str) -> None:
        """Record one rejection, once: a rejection already on chain is left as it is."""
        if self.client.rejection_of(round_number, submission.node) != 0:
            return
        log.debug("round %d: rejecting %s from %s: %s (%s)", round_number, submission.update_hash, submission.node, reason.name, detail)
        try:
            self.client.reject_update(round_number, submission.node, reason)
        except errors.AlreadyRejected:  # our own rejection sent before a restart landed after all
            pass

    def _abandon(self, round_number: int, reason: AbandonReason) -> None:
        try:
            self.client.abandon_round(round_number, reason)
        except errors.RoundNotOpen:  # closed meanwhile (our own abandon sent before a restart)
            return
        report(log, "abandoned", "round {round}: abandoned ({reason})", round=round_number, reason=reason.name.lower())

    def _closed_result(self, info: RoundInfo) -> RoundResult:
        """A round that is already finalized or abandoned, as the chain (and its metadata blob) records it."""
        if info.state is RoundState.NONE:
            raise ValueError(f"round {info.round} was never opened")
        submissions = round_submissions(self.client, info.round)
        recorded = {e.node: RejectReason(e.reason_code) for e in round_rejections(self.client, info.round)}
        rejected = tuple((s, recorded[s.node], "recorded on chain") for s in submissions if s.node in recorded)
        if info.state is RoundState.ABANDONED:
            abandoned = self.client.events(event_type=events.RoundAbandoned, topic_filters=[round_topic(info.round)])
            reason = AbandonReason(abandoned[-1].reason_code) if abandoned else None
            return RoundResult(
                info.round, info.base_model_hash or "", (), rejected, None, None, None, {},
                abandon_reason=reason, found_closed=True,
            )  # fmt: skip
        commit = next(e for e in committed_models(self.client) if e.round == info.round and e.version > 0)
        record = self._round_record(commit.metadata_hash)
        if record is not None:
            included_hashes = {u.update_hash for u in record.included}
            included = tuple(s for s in submissions if s.update_hash in included_hashes)
            accuracy = record.metrics.get("test_accuracy")
        else:
            included = tuple(s for s in submissions if s.node not in recorded)
            accuracy = None
        report(log, "committed", "round {round}: committed v{version} {model_hash} (found on chain)",
               round=info.round, version=commit.version, model_hash=commit.model_hash)
        return RoundResult(
            info.round,
            info.base_model_hash or "",
            included,
            rejected,
            commit.model_hash,
            commit.metadata_hash,
            accuracy if isinstance(accuracy, float) else None,
            {},
            found_closed=True,
        )

    def _round_record(self, metadata_hash: str | None) -> RoundRecord | None:
        if metadata_hash is None:
            return None
        try:
            record = decode(self.store.get(metadata_hash))
        except (BlobStoreError, MetadataError):
            return None
        return record if isinstance(record, RoundRecord) else None

    def _evaluate(self, weights: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """The task's metrics (at least accuracy and loss) of `weights` on the held-out data."""
        model = self.config.task.build_model(self.config.model_seed)
        load_state(model, weights)
        return checked_metrics(self.config.task, self.config.task.evaluate(model, self.test_split))
