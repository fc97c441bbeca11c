"""An edge node's part in a round: verify the base model against the chain, train, pin the update.

The data never leaves the node: only the trained weights are serialized (canonical safetensors),
stored content-addressed, and pinned on chain by their SHA-256 with the node's own key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch

from ledger.chain import errors
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.rounds import round_submissions
from ledger.core.data import Shard
from ledger.core.hashing import sha256_hex
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.base import BlobStore

from edge_node.misbehaviour import Attack, RoundView
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
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.05
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
    """One data owner: its chain client (its key), a store, its private shard."""

    def __init__(
        self,
        client: LedgerClient,
        store: BlobStore,
        shard: Shard,
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

    @property
    def address(self) -> str:
        return self.client.account.address  # type: ignore[union-attr]

    def participate(self, round_number: int) -> Participation:
        """Train on the round's base model and submit; a closed or already-answered round is not an error."""
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN:
            return Participation(round_number, Outcome.ROUND_CLOSED)
        if self.client.submission_of(round_number, self.address) is not None:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        assert info.base_model_hash is not None
        started = time.perf_counter()
        base = self.fetch_base(info.base_model_hash)
        fetched = time.perf_counter()
        num_samples = len(self.shard)
        existing: str | None = None  # an attacker may submit a stored blob's hash as is
        if self.attack is not None:
            contribution = self.attack(self._view(round_number, info.base_model_hash, base))
            weights, existing, num_samples = contribution.weights, contribution.update_hash, contribution.num_samples
        else:
            weights = self._train(base, round_number, self.shard, None)
        if weights is not None and self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        if weights is not None:
            blob = serialize_tensors(weights)
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
        )

    def _train(
        self, base: Mapping[str, torch.Tensor], round_number: int, shard: Shard, epochs: int | None
    ) -> dict[str, torch.Tensor]:
        seed = self.config.seed * 1_000_003 + round_number
        return train_local(
            base, shard, epochs=epochs or self.config.epochs, batch_size=self.config.batch_size, lr=self.config.lr, seed=seed
        )

    def _view(self, round_number: int, base_hash: str, base: Mapping[str, torch.Tensor]) -> RoundView:
        def others() -> list[tuple[str, int]]:
            mine = self.address.lower()
            found = round_submissions(self.client, round_number)
            return [(s.update_hash, s.num_samples) for s in found if s.node.lower() != mine]

        return RoundView(
            round=round_number,
            base_hash=base_hash,
            base=base,
            shard=self.shard,
            train=lambda shard, epochs: self._train(base, round_number, shard, epochs),
            submitted=others,
        )

    def fetch_base(self, base_hash: str) -> dict[str, torch.Tensor]:
        """The base model's tensors, only if its bytes hash to what the chain recorded."""
        blob = self.store.get(base_hash)  # stores re-hash on read; check again: never trust a store
        if sha256_hex(blob) != base_hash:
            from ledger.store.base import HashMismatch

            raise HashMismatch(base_hash, sha256_hex(blob))
        return deserialize_tensors(blob, max_bytes=self.max_model_bytes)
