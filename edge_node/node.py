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
from ledger.chain.client import LedgerClient, RoundState, sign_submission
from ledger.chain.rounds import chain_now
from ledger.core.data import Shard
from ledger.core.hashing import sha256_hex
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.base import BlobStore
from ledger.store.relay import RelayFolder

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
    HANDED_OVER = "handed to a relayer"  # signed and left for a relayer; see `EdgeNode.ensure_submitted`
    RELAYED = "relayed"
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
        relay: RelayFolder | None = None,
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
        self.relay = relay
        self._handed: dict[int, tuple[str, int]] = {}  # round -> (update hash, samples) left for a relayer

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
        seed = self.config.seed * 1_000_003 + round_number
        weights = train_local(
            base, self.shard, epochs=self.config.epochs, batch_size=self.config.batch_size, lr=self.config.lr, seed=seed
        )
        if self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        blob = serialize_tensors(weights)
        update_hash = self.store.put(blob)
        stored = time.perf_counter()
        if self.after_upload is not None:
            self.after_upload(update_hash, blob)
        if self.relay is not None:
            account = self.client.account
            assert account is not None
            record = sign_submission(account, self.client.chain_id, self.client.address, round_number, update_hash, len(self.shard))
            self.relay.hand_over(round_number, self.address, record)
            self._handed[round_number] = (update_hash, len(self.shard))
            return Participation(
                round_number, Outcome.HANDED_OVER, update_hash, len(self.shard), trained - fetched, (fetched - started) + (stored - trained)
            )
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
        if chain_now(self.client) < info.deadline - grace_seconds:
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

    def fetch_base(self, base_hash: str) -> dict[str, torch.Tensor]:
        """The base model's tensors, only if its bytes hash to what the chain recorded."""
        blob = self.store.get(base_hash)  # stores re-hash on read; check again: never trust a store
        if sha256_hex(blob) != base_hash:
            from ledger.store.base import HashMismatch

            raise HashMismatch(base_hash, sha256_hex(blob))
        return deserialize_tensors(blob, max_bytes=self.max_model_bytes)
