"""An edge node's part in a round: verify the base model against the chain, train, pin the update.

The data never leaves the node: only the trained weights are encoded (in the encoding the
federation pinned at genesis), stored content-addressed, and pinned on chain by their SHA-256 with
the node's own key; only the tensors the pinned task trains travel. Before it trains, a node
checks that it runs the task spec pinned at genesis and refuses to take part if not. When the
federation trains privately, the node trains with DP-SGD under the pinned policy and puts its
privacy claim (its cumulative ε, recomputed from its own earlier updates as the chain and the
store hold them) inside the bytes it pins; it publishes nothing once the next update would take it
over the budget.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import Enum
from functools import cached_property
from typing import Any

import torch

from ledger.audit.facts import read_genesis
from ledger.chain import errors
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.rounds import round_submissions
from ledger.core.encoding import encode_update
from ledger.core.errors import LedgerError
from ledger.core.hashing import sha256_hex
from ledger.core.manifest import trainable_part
from ledger.core.policy import ENCODINGS, RDP_ACCOUNTANT, FederationPolicy
from ledger.core.serialization import deserialize_tensors
from ledger.core.task import Examples, Task
from ledger.core.task_spec import TaskSpec, check_spec
from ledger.privacy.accountant import Spend
from ledger.privacy.history import PrivacyBook
from ledger.privacy.judge import Unaccountable, next_claim
from ledger.store.base import BlobStore
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
        if info.state is not RoundState.OPEN:
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
            if Decimal(upcoming.epsilon) > Decimal(policy.privacy.epsilon_budget):
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
            weights = train_local_dp(self.config.task, self.spec, base, self.shard, policy.privacy, lr=self.config.dp_lr)
        else:
            weights = self._train(base, round_number, self.shard, None)
        if weights is not None and self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        if weights is not None:
            blob = encode_update(weights, base, policy.encoding, privacy=claim)
            update_hash = self.store.put(blob)
            if self.after_upload is not None:
                self.after_upload(update_hash, blob)
        else:
            assert existing is not None
            update_hash = existing
        stored = time.perf_counter()
        try:
            self.client.submit_update(round_number, update_hash, num_samples)
        except errors.AlreadySubmitted:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        except (errors.RoundNotOpen, errors.DeadlinePassed) as exc:
            log.info("round %d closed before %s could submit: %s", round_number, self.address, exc)
            return Participation(round_number, Outcome.ROUND_CLOSED)
        submitted = time.perf_counter()
        return Participation(
            round=round_number,
            outcome=Outcome.SUBMITTED,
            update_hash=update_hash,
            num_samples=num_samples,
            train_seconds=trained - fetched,
            store_seconds=(fetched - started) + (stored - trained),
            chain_seconds=submitted - stored,
            epsilon=None if claim is None else claim["epsilon"],
        )

    def _train(
        self, base: Mapping[str, torch.Tensor], round_number: int, data: Examples, epochs: int | None
    ) -> dict[str, torch.Tensor]:
        """The trainable tensors after local training from `base`; `epochs` (attacks only) overrides
        the pinned epochs for a task that has that hyperparameter."""
        seed = self.config.seed * 1_000_003 + round_number
        return train_local(self.config.task, with_epochs(self.spec, epochs), base, data, seed=seed)

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
