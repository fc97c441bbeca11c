"""Fetching a round's updates while the round is still open, so closing it does not wait on the network.

As soon as the chain shows a submission, a worker fetches its blob from the store (which
re-hashes it) and keeps the bytes, up to a byte budget. At close the intake reads through
`PrefetchedStore`: the kept bytes when there are some (re-hashed again as they are handed out,
then dropped), the store otherwise. Only bytes that hash to the chain's hash are ever kept, so
which copy answers changes when the work is done, never the verdict: a blob that was missing,
altered or too large while the round was open is simply fetched again at close, and judged then.

Without this, closing a round fetched every update over the network after the last submission:
at 1,000 nodes, seconds of HTTP round trips on the critical path. The budget bounds the memory
whatever the number of updates (past it, updates are fetched at close, streamed as before); it
is memory, not a disk spool, because creating and deleting a thousand files costs more than the
fetches themselves on a disk mounted with online discard.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import numpy as np

from ledger.chain import events
from ledger.core.hashing import sha256_hex
from ledger.store.base import BlobStore, BlobStoreError

log = logging.getLogger(__name__)


class PrefetchedStore:
    """The store, except that `get` first hands out (once) the bytes the prefetcher kept."""

    def __init__(self, kept: dict[str, bytes], lock: threading.Lock, store: BlobStore) -> None:
        self._kept = kept
        self._lock = lock
        self.store = store

    def get(self, name: str) -> bytes:
        with self._lock:
            data = self._kept.pop(name, None)
        if data is not None and sha256_hex(data) == name:
            return data
        return self.store.get(name)

    def get_buffer(self, name: str, spare: np.ndarray | None = None) -> memoryview:
        """`get` as a read-only view (the intake parses it in place); `spare` is not needed."""
        return memoryview(self.get(name))

    def put(self, data: bytes) -> str:
        return self.store.put(data)

    def put_as(self, name: str, data: bytes) -> None:
        self.store.put_as(name, data)

    def exists(self, name: str) -> bool:
        return self.store.exists(name)


class Prefetcher:
    """Fetches each new submission's blob with `workers` threads while it fits in `budget_bytes`;
    a context manager whose exit stops the workers and drops what is left."""

    def __init__(self, store: BlobStore, *, budget_bytes: int, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.store = store
        self.budget_bytes = budget_bytes
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch")
        self._scheduled: dict[str, Future[None]] = {}
        self._kept: dict[str, bytes] = {}
        self._kept_bytes = 0
        self._lock = threading.Lock()

    def add(self, submissions: Iterable[events.UpdateSubmitted]) -> None:
        """Start fetching every submission not seen before (returns at once)."""
        with self._lock:
            for submission in submissions:
                name = submission.update_hash
                if name not in self._scheduled and self._kept_bytes < self.budget_bytes:
                    self._scheduled[name] = self._pool.submit(self._fetch, name)

    def finish(self) -> PrefetchedStore:
        """Wait for the fetches already started; the store the intake should read through."""
        with self._lock:
            pending = list(self._scheduled.values())
        wait(pending)
        return PrefetchedStore(self._kept, self._lock, self.store)

    def _fetch(self, name: str) -> None:
        try:
            data = self.store.get(name)
        except (BlobStoreError, OSError) as exc:  # judged at close, from the store itself
            log.debug("prefetch of %s failed (%s): it will be fetched at close", name, exc)
            return
        with self._lock:
            if self._kept_bytes + len(data) <= self.budget_bytes:
                self._kept[name] = data
                self._kept_bytes += len(data)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            self._kept.clear()

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
