"""An edge node's part in a round: verify the base model against the chain, train, pin the update.

The data never leaves the node: only the trained weights are encoded (in the encoding the
federation pinned at genesis), stored content-addressed, and pinned on chain by their SHA-256 with
the node's own key; only the tensors the pinned task trains travel. Before it trains, a node
checks that it runs the task spec pinned at genesis and refuses to take part if not. When the
federation trains privately, the node trains with DP-SGD under the pinned policy and puts its
privacy claim (its cumulative ε, recomputed from its own earlier updates as the chain and the
store hold them) inside the bytes it pins; it publishes nothing once the next update would take it
over the budget.

"May I still submit?" is asked of the chain (the timestamp its next block would carry) before
training, and the submission is simulated against the pending block while the update uploads; a
submission that still lands after the deadline reverts and is reported as "round closed", never as
an error. Every step is idempotent, so a node killed at any point (after its upload, before its
submission) simply takes part again when restarted.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

import torch

from ledger.audit.facts import read_genesis
from ledger.chain import errors
from ledger.chain.client import LedgerClient, RoundState, sign_submission
from ledger.chain.clock import ChainClock
from ledger.chain.rounds import round_submissions
from ledger.core.encoding import encode_update
from ledger.core.errors import LedgerError
from ledger.core.hashing import sha256_hex
from ledger.core.manifest import trainable_part
from ledger.core.model import state_tensors
from ledger.core.policy import ENCODINGS, RDP_ACCOUNTANT, FederationPolicy
from ledger.core.progress import megabytes, report
from ledger.core.serialization import deserialize_tensors
from ledger.core.task import Examples, Task
from ledger.core.task_spec import TaskSpec, check_spec
from ledger.privacy.accountant import Spend
from ledger.privacy.history import PrivacyBook
from ledger.privacy.judge import Unaccountable, next_claim, over_budget
from ledger.store.base import BlobStore
from ledger.store.relay import RelayFolder
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec

from edge_node.dp_training import DP_LEARNING_RATE, train_local_dp
from edge_node.misbehaviour import Attack, RoundView, with_epochs
from edge_node.training import train_local

log = logging.getLogger(__name__)

# Called with (update_hash, blob) once the blob is stored and before its hash goes on chain; the
# demo uses it to play a node that alters its blob at rest. Running it before the submission means
# the aggregator, which only looks after the chain records the hash, can never see the honest
# bytes first. Honest nodes pass None.
AfterUpload = Callable[[str, bytes], None]
# Called on the trained weights before serialization; the demo uses it to play a poisoner.
Transform = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


class UnsupportedPolicy(LedgerError):
    """The federation pins something this node's software cannot do: it does not join."""


@dataclass(frozen=True)
class TrainingConfig:
    """Which task this node trains, with which hyperparameters (overrides of the task's defaults), and
    its seed; under DP the pinned policy's batch size and epochs apply, with the step `dp_lr`."""

    task: Task = DIGITS_MLP
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0  # drives batch order without DP; DP noise and sampling always use OS entropy
    dp_lr: float = DP_LEARNING_RATE


class Outcome(Enum):
    SUBMITTED = "submitted"
    HANDED_OVER = "handed to a relayer"  # signed and left for a relayer; see `EdgeNode.ensure_submitted`
    RELAYED = "relayed"
    ALREADY_SUBMITTED = "already submitted"
    ROUND_CLOSED = "round closed"
    BUDGET_EXHAUSTED = "privacy budget exhausted: not publishing"
    UNACCOUNTABLE = "an earlier update's privacy spend cannot be accounted for: not publishing"


@dataclass(frozen=True)
class Participation:
    round: int
    outcome: Outcome
    update_hash: str | None = None
    num_samples: int = 0
    train_seconds: float = 0.0
    store_seconds: float = 0.0
    chain_seconds: float = 0.0
    epsilon: str | None = None  # DP: the cumulative ε this update claims (or would have, over the budget)
    block_number: int | None = None


class EdgeNode:
    """One data owner: its chain client (its key), a store, its private data set."""

    def __init__(
        self,
        client: LedgerClient,
        store: BlobStore,
        shard: Examples,
        config: TrainingConfig = TrainingConfig(),
        *,
        max_model_bytes: int,
        transform: Transform | None = None,
        after_upload: AfterUpload | None = None,
        clock: ChainClock | None = None,
        relay: RelayFolder | None = None,
        attack: Attack | None = None,
    ) -> None:
        if client.account is None:
            raise ValueError("an edge node needs a signing account")
        self.client = client
        self.store = store
        self.shard = shard
        self.config = config
        self.max_model_bytes = max_model_bytes
        self.transform = transform
        self.after_upload = after_upload
        self.clock = clock or ChainClock(client.w3)
        self.relay = relay
        self._handed: dict[int, tuple[str, int]] = {}  # round -> (update hash, samples) left for a relayer
        self.attack = attack  # demo only: what this node submits instead of its honest update
        self._policy: FederationPolicy | None = None
        self._privacy_book: PrivacyBook | None = None

    @property
    def address(self) -> str:
        return self.client.account.address  # type: ignore[union-attr]

    @cached_property
    def spec(self) -> TaskSpec:
        """This node's task spec, compared with the federation's pinned one before it trains."""
        return task_spec(self.config.task, self.config.hyperparameters)

    def policy(self) -> FederationPolicy:
        """The policy pinned at genesis, read once, after checking that this node can follow it
        (`UnsupportedPolicy`) and runs the pinned task (`TaskSpecMismatch`, naming the field)."""
        if self._policy is None:
            genesis = read_genesis(self.client, self.store)
            check_supported(genesis.policy)
            check_spec("node", genesis.task, self.spec)
            self._policy = genesis.policy
        return self._policy

    def participate(self, round_number: int) -> Participation:
        """Train on the round's base model and submit; a closed or already-answered round is not an error."""
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN or self.clock.too_late(info.deadline):
            return Participation(round_number, Outcome.ROUND_CLOSED)
        if self.client.submission_of(round_number, self.address) is not None:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        assert info.base_model_hash is not None
        policy = self.policy()
        claim: dict[str, Any] | None = None
        if policy.privacy is not None:
            spent = self._earlier_spends(round_number)
            if spent is None:
                return Participation(round_number, Outcome.UNACCOUNTABLE)
            upcoming = next_claim(policy.privacy, num_samples=len(self.shard), earlier=spent)
            if over_budget(policy.privacy, upcoming.epsilon):
                return Participation(round_number, Outcome.BUDGET_EXHAUSTED, epsilon=upcoming.epsilon)
            claim = upcoming.to_json()
        started = time.perf_counter()
        base = self.fetch_base(info.base_model_hash)
        fetched = time.perf_counter()
        num_samples = len(self.shard)
        existing: str | None = None  # an attacker may submit a stored blob's hash as is
        weights: dict[str, torch.Tensor] | None
        if self.attack is not None:
            contribution = self.attack(self._view(round_number, info.base_model_hash, base))
            weights, existing, num_samples = contribution.weights, contribution.update_hash, contribution.num_samples
        elif policy.privacy is not None:
            report(log, "training", "round {round}: training with DP-SGD", round=round_number)
            weights = train_local_dp(self.config.task, self.spec, base, self.shard, policy.privacy, lr=self.config.dp_lr)
        else:
            epochs = self.spec.hyperparameters.get("epochs", "?")

            def on_epoch(epoch: int) -> None:
                report(log, "training", "round {round}: training epoch {epoch}/{epochs}", round=round_number, epoch=epoch, epochs=epochs)

            weights = self._train(base, round_number, self.shard, None, on_epoch=on_epoch)
        if weights is not None and self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        blob = None if weights is None else encode_update(weights, base, policy.encoding, privacy=claim)
        if blob is not None:
            update_hash = sha256_hex(blob)
        else:
            assert existing is not None
            update_hash = existing
        # The upload and the submission's preparation (nonce, simulation against the pending block,
        # signature) run side by side; the transaction is sent only once the blob is stored, so the
        # aggregator never sees a hash on chain whose bytes are not in the store yet.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as pool:
            upload = None if blob is None else pool.submit(self.store.put, blob)
            try:
                prepared = self.client.prepare_submission(round_number, update_hash, num_samples)
            except errors.AlreadySubmitted:
                return Participation(round_number, Outcome.ALREADY_SUBMITTED)
            except (errors.RoundNotOpen, errors.DeadlinePassed) as exc:
                report(log, "round_closed", "round {round}: closed before the update could be submitted ({reason})", round=round_number, reason=type(exc).__name__)
                return Participation(round_number, Outcome.ROUND_CLOSED, train_seconds=trained - fetched)
            if upload is not None:
                upload.result()
        stored = time.perf_counter()
        if blob is not None:
            report(log, "uploaded", "round {round}: uploaded {size}", round=round_number, size=megabytes(len(blob)), bytes=len(blob), update_hash=update_hash)
            if self.after_upload is not None:
                self.after_upload(update_hash, blob)
        if self.relay is not None:
            account = self.client.account
            assert account is not None
            record = sign_submission(account, self.client.chain_id, self.client.address, round_number, update_hash, num_samples)
            self.relay.hand_over(round_number, self.address, record)
            self._handed[round_number] = (update_hash, num_samples)
            return Participation(
                round_number, Outcome.HANDED_OVER, update_hash, num_samples, trained - fetched,
                (fetched - started) + (stored - trained), epsilon=None if claim is None else claim["epsilon"],
            )  # fmt: skip
        try:
            receipt = self.client.send(prepared)
        except errors.AlreadySubmitted:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        except (errors.RoundNotOpen, errors.DeadlinePassed) as exc:
            report(log, "round_closed", "round {round}: closed before the submission landed ({reason})", round=round_number, reason=type(exc).__name__)
            return Participation(round_number, Outcome.ROUND_CLOSED)
        submitted = time.perf_counter()
        report(log, "submitted", "round {round}: submitted in block {block}", round=round_number, block=receipt.block_number, update_hash=update_hash)
        return Participation(
            round=round_number,
            outcome=Outcome.SUBMITTED,
            update_hash=update_hash,
            num_samples=num_samples,
            train_seconds=trained - fetched,
            store_seconds=(fetched - started) + (stored - trained),
            chain_seconds=submitted - stored,
            epsilon=None if claim is None else claim["epsilon"],
            block_number=receipt.block_number,
        )

    def warm_up(self) -> None:
        """One throwaway training pass on a few samples: torch's first backward pass, allocator and
        kernel choices cost seconds on a busy machine, better spent before the node says it is ready.
        Touches no state a round uses (a fresh model, a private generator)."""
        few = self.shard.subset(torch.arange(min(len(self.shard), 32)))
        model = self.config.task.build_model(seed=0)
        train_local(self.config.task, self.spec, state_tensors(model), few, seed=0)

    def ensure_submitted(self, round_number: int, *, grace_seconds: int) -> Participation:
        """After `participate` handed the submission to a relayer: RELAYED once the chain holds it;
        once chain time is within `grace_seconds` of the deadline without it, submit it directly
        (a relayer can delay or drop a record, never keep the node out); HANDED_OVER meanwhile."""
        handed = self._handed.get(round_number)
        if handed is None:
            raise ValueError(f"round {round_number}: no submission was handed to a relayer")
        update_hash, num_samples = handed
        on_chain = self.client.submission_of(round_number, self.address)
        if on_chain is not None:
            return Participation(round_number, Outcome.RELAYED, on_chain, num_samples)
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            return Participation(round_number, Outcome.ROUND_CLOSED)
        if self.clock.now() < info.deadline - grace_seconds:
            return Participation(round_number, Outcome.HANDED_OVER, update_hash, num_samples)
        started = time.perf_counter()
        try:
            self.client.submit_update(round_number, update_hash, num_samples)
        except errors.AlreadySubmitted:  # the relayer's batch landed first
            return Participation(round_number, Outcome.RELAYED, update_hash, num_samples)
        except (errors.RoundNotOpen, errors.DeadlinePassed) as exc:
            log.info("round %d closed before %s could submit: %s", round_number, self.address, exc)
            return Participation(round_number, Outcome.ROUND_CLOSED)
        return Participation(
            round_number, Outcome.SUBMITTED, update_hash, num_samples, chain_seconds=time.perf_counter() - started
        )

    def _train(
        self,
        base: Mapping[str, torch.Tensor],
        round_number: int,
        data: Examples,
        epochs: int | None,
        *,
        on_epoch: Callable[[int], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """The trainable tensors after local training from `base`; `epochs` (attacks only) overrides
        the pinned epochs for a task that has that hyperparameter."""
        seed = self.config.seed * 1_000_003 + round_number
        return train_local(self.config.task, with_epochs(self.spec, epochs), base, data, seed=seed, on_epoch=on_epoch)

    def _view(self, round_number: int, base_hash: str, base: Mapping[str, torch.Tensor]) -> RoundView:
        """What an attack sees: the base's travelling (trainable) tensors, this node's data, training."""

        def others() -> list[tuple[str, int]]:
            mine = self.address.lower()
            found = round_submissions(self.client, round_number)
            return [(s.update_hash, s.num_samples) for s in found if s.node.lower() != mine]

        return RoundView(
            round=round_number,
            base_hash=base_hash,
            base=trainable_part(base, self.spec),
            shard=self.shard,
            train=lambda shard, epochs: self._train(base, round_number, shard, epochs),
            submitted=others,
        )

    def _earlier_spends(self, round_number: int) -> list[Spend] | None:
        """What this node's earlier updates spent, from the chain and the store; None if any is unknown."""
        policy = self.policy().privacy
        assert policy is not None
        if self._privacy_book is None:
            self._privacy_book = PrivacyBook(self.client, self.store, policy)
        entries = self._privacy_book.earlier(round_number, [self.address])[self.address]
        for entry in entries:
            if isinstance(entry, Unaccountable):
                log.warning("node %s: update %s (round %d): %s", self.address, entry.update_hash, entry.round, entry.why)
                return None
        return [entry for entry in entries if isinstance(entry, Spend)]

    def fetch_base(self, base_hash: str) -> dict[str, torch.Tensor]:
        """The base model's tensors, only if its bytes hash to what the chain recorded."""
        blob = self.store.get(base_hash)  # stores re-hash on read; check again: never trust a store
        if sha256_hex(blob) != base_hash:
            from ledger.store.base import HashMismatch

            raise HashMismatch(base_hash, sha256_hex(blob))
        return deserialize_tensors(blob, max_bytes=self.max_model_bytes)


def check_supported(policy: FederationPolicy) -> None:
    """`UnsupportedPolicy` (one line, naming what) if this software cannot follow `policy`."""
    if policy.encoding not in ENCODINGS:
        raise UnsupportedPolicy(
            f"the federation pins update encoding {policy.encoding!r}; this fedledger writes {', '.join(ENCODINGS)}"
        )
    if policy.privacy is not None:
        if policy.privacy.accountant != RDP_ACCOUNTANT:
            raise UnsupportedPolicy(
                f"the federation pins privacy accountant {policy.privacy.accountant!r}; this fedledger has {RDP_ACCOUNTANT!r}"
            )
        if importlib.util.find_spec("opacus") is None:
            raise UnsupportedPolicy("the federation trains with differential privacy and Opacus is not installed")
