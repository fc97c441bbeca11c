"""An edge node's part in a round: verify the base model against the chain, train, pin the update.

Before it trains for a federation, a node compares the task spec pinned at genesis with its own
and refuses to take part if they differ. The data never leaves the node: only the trained
(trainable) weights are serialized (canonical safetensors), stored content-addressed, and pinned
on chain by their SHA-256 with the node's own key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import Any

import torch

from ledger.audit.pinned import PinnedGenesisUnavailable, read_pinned_genesis
from ledger.chain import errors
from ledger.chain.client import LedgerClient, RoundState
from ledger.core.hashing import sha256_hex
from ledger.core.task import Examples, Task
from ledger.core.task_spec import TaskSpec, check_spec
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.base import BlobStore
from ledger.tasks.digits import DIGITS_MLP
from ledger.tasks.spec import task_spec

from edge_node.training import train_local

log = logging.getLogger(__name__)

# Called with (update_hash, blob) once the blob is stored and before its hash goes on chain; the
# demo uses it to play a node that alters its blob at rest. Running it before the submission means
# the aggregator, which only looks after the chain records the hash, can never see the honest
# bytes first. Honest nodes pass None.
AfterUpload = Callable[[str, bytes], None]
# Called on the trained weights before serialization; the demo uses it to play a poisoner.
Transform = Callable[[Mapping[str, torch.Tensor]], dict[str, torch.Tensor]]


@dataclass(frozen=True)
class TrainingConfig:
    """Which task this node trains, with which hyperparameters (overrides of the task's defaults), and its seed."""

    task: Task = DIGITS_MLP
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    seed: int = 0


class Outcome(Enum):
    SUBMITTED = "submitted"
    ALREADY_SUBMITTED = "already submitted"
    ROUND_CLOSED = "round closed"


@dataclass(frozen=True)
class Participation:
    round: int
    outcome: Outcome
    update_hash: str | None = None
    num_samples: int = 0
    train_seconds: float = 0.0
    store_seconds: float = 0.0
    chain_seconds: float = 0.0


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
        self._joined = False

    @property
    def address(self) -> str:
        return self.client.account.address  # type: ignore[union-attr]

    @cached_property
    def spec(self) -> TaskSpec:
        """This node's task spec, compared with the federation's pinned one before it trains."""
        return task_spec(self.config.task, self.config.hyperparameters)

    def check_pinned_task(self) -> None:
        """Refuses (`TaskSpecMismatch`, naming the field) a federation whose pinned task differs from this node's."""
        if self._joined:
            return
        pinned = read_pinned_genesis(self.client, self.store)
        if pinned is None:
            raise PinnedGenesisUnavailable("no genesis is committed yet, so there is no task to compare with")
        check_spec("node", pinned.task, self.spec)
        self._joined = True

    def participate(self, round_number: int) -> Participation:
        """Train on the round's base model and submit; a closed or already-answered round is not an error."""
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            return Participation(round_number, Outcome.ROUND_CLOSED)
        if self.client.submission_of(round_number, self.address) is not None:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        assert info.base_model_hash is not None
        self.check_pinned_task()
        started = time.perf_counter()
        base = self.fetch_base(info.base_model_hash)
        fetched = time.perf_counter()
        seed = self.config.seed * 1_000_003 + round_number
        weights = train_local(self.config.task, self.spec, base, self.shard, seed=seed)
        if self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        blob = serialize_tensors(weights)
        update_hash = self.store.put(blob)
        stored = time.perf_counter()
        if self.after_upload is not None:
            self.after_upload(update_hash, blob)
        try:
            self.client.submit_update(round_number, update_hash, len(self.shard))
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
            num_samples=len(self.shard),
            train_seconds=trained - fetched,
            store_seconds=(fetched - started) + (stored - trained),
            chain_seconds=submitted - stored,
        )

    def fetch_base(self, base_hash: str) -> dict[str, torch.Tensor]:
        """The base model's tensors, only if its bytes hash to what the chain recorded."""
        blob = self.store.get(base_hash)  # stores re-hash on read; check again: never trust a store
        if sha256_hex(blob) != base_hash:
            from ledger.store.base import HashMismatch

            raise HashMismatch(base_hash, sha256_hex(blob))
        return deserialize_tensors(blob, max_bytes=self.max_model_bytes)
