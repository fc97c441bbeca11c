"""An edge node's part in a round: verify the base model against the chain, train, pin the update.

The data never leaves the node: only the trained weights are serialized (canonical safetensors),
stored content-addressed, and pinned on chain by their SHA-256 with the node's own key.

"May I still submit?" is asked of the chain (the timestamp its next block would carry), before
training and again before uploading; a submission that still lands after the deadline reverts
and is reported as "round closed", never as an error. Every step is idempotent, so a node killed
at any point (after its upload, before its submission) simply takes part again when restarted.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum

import torch

from ledger.chain import errors
from ledger.chain.client import LedgerClient, RoundState
from ledger.chain.clock import ChainClock
from ledger.core.data import Shard
from ledger.core.hashing import sha256_hex
from ledger.core.model import build_model, state_tensors
from ledger.core.progress import megabytes, report
from ledger.core.serialization import deserialize_tensors, serialize_tensors
from ledger.store.base import BlobStore

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
    block_number: int | None = None
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
        clock: ChainClock | None = None,
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

    @property
    def address(self) -> str:
        return self.client.account.address  # type: ignore[union-attr]

    def participate(self, round_number: int) -> Participation:
        """Train on the round's base model and submit; a closed or already-answered round is not an error."""
        info = self.client.get_round(round_number)
        if info.state is not RoundState.OPEN or self.clock.too_late(info.deadline):
            return Participation(round_number, Outcome.ROUND_CLOSED)
        if self.client.submission_of(round_number, self.address) is not None:
            return Participation(round_number, Outcome.ALREADY_SUBMITTED)
        assert info.base_model_hash is not None
        started = time.perf_counter()
        base = self.fetch_base(info.base_model_hash)
        fetched = time.perf_counter()
        seed = self.config.seed * 1_000_003 + round_number
        epochs = self.config.epochs

        def on_epoch(epoch: int) -> None:
            report(log, "training", "round {round}: training epoch {epoch}/{epochs}", round=round_number, epoch=epoch, epochs=epochs)

        weights = train_local(
            base,
            self.shard,
            epochs=epochs,
            batch_size=self.config.batch_size,
            lr=self.config.lr,
            seed=seed,
            on_epoch=on_epoch,
        )
        if self.transform is not None:
            weights = self.transform(weights)
        trained = time.perf_counter()
        blob = serialize_tensors(weights)
        update_hash = sha256_hex(blob)
        # The upload and the submission's preparation (nonce, simulation against the pending block,
        # signature) run side by side; the transaction is sent only once the blob is stored, so the
        # aggregator never sees a hash on chain whose bytes are not in the store yet.
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload") as pool:
            upload = pool.submit(self.store.put, blob)
            try:
                prepared = self.client.prepare_submission(round_number, update_hash, len(self.shard))
            except errors.AlreadySubmitted:
                return Participation(round_number, Outcome.ALREADY_SUBMITTED)
            except (errors.RoundNotOpen, errors.DeadlinePassed) as exc:
                report(log, "round_closed", "round {round}: closed before the update could be submitted ({reason})", round=round_number, reason=type(exc).__name__)
                return Participation(round_number, Outcome.ROUND_CLOSED, train_seconds=trained - fetched)
            upload.result()
        stored = time.perf_counter()
        report(log, "uploaded", "round {round}: uploaded {size}", round=round_number, size=megabytes(len(blob)), bytes=len(blob), update_hash=update_hash)
        if self.after_upload is not None:
            self.after_upload(update_hash, blob)
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
            num_samples=len(self.shard),
            block_number=receipt.block_number,
            train_seconds=trained - fetched,
            store_seconds=(fetched - started) + (stored - trained),
            chain_seconds=submitted - stored,
        )

    def warm_up(self) -> None:
        """One throwaway training step on a few samples: torch's first backward pass, allocator and
        kernel choices cost seconds on a busy machine, better spent before the node says it is ready.
        Touches no state a round uses (fresh model, private generator)."""
        few = Shard(self.shard.x[: self.config.batch_size], self.shard.y[: self.config.batch_size])
        train_local(state_tensors(build_model(seed=0)), few, epochs=1, batch_size=self.config.batch_size, lr=self.config.lr, seed=0)

    def fetch_base(self, base_hash: str) -> dict[str, torch.Tensor]:
        """The base model's tensors, only if its bytes hash to what the chain recorded."""
        blob = self.store.get(base_hash)  # stores re-hash on read; check again: never trust a store
        if sha256_hex(blob) != base_hash:
            from ledger.store.base import HashMismatch

            raise HashMismatch(base_hash, sha256_hex(blob))
        return deserialize_tensors(blob, max_bytes=self.max_model_bytes)
