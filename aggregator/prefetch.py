"""Fetching a round's updates while it still waits for the rest, so closing it re-reads none of them.

As each `UpdateSubmitted` lands, its blob is downloaded (and re-hashed by the store) in the
background; when the round closes, the intake's `get` finds the bytes already here. Only small
rounds are fetched ahead (`budget_bytes` in total, judged from the base model's size), so memory
stays bounded whatever the model: large updates keep streaming through the intake as before.
Failures are not remembered: the intake fetches again and turns the failure into its verdict.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

from ledger.store.base import BlobStore, BlobStoreError

DEFAULT_BUDGET_BYTES = 64 * 1024 * 1024


class PrefetchingStore:
    """A `BlobStore` that answers `get` from downloads started earlier with `want`."""

    def __init__(self, store: BlobStore, *, workers: int = 2) -> None:
        self.store = store
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="prefetch")
        self._pending: dict[str, Future[bytes]] = {}

    def want(self, name: str) -> None:
        """Start downloading `name` unless it is already under way."""
        if name not in self._pending:
            self._pending[name] = self._pool.submit(self.store.get, name)

    def get(self, name: str) -> bytes:
        pending = self._pending.pop(name, None)
        if pending is not None:
            try:
                return pending.result()
            except BlobStoreError:
                pass  # fetched again below, so the refusal becomes the intake's verdict
        return self.store.get(name)

    def put(self, data: bytes) -> str:
        return self.store.put(data)

    def put_as(self, name: str, data: bytes) -> None:
        self.store.put_as(name, data)

    def exists(self, name: str) -> bool:
        return self.store.exists(name)

    def close(self) -> None:
        """Drop whatever was fetched and not used (updates the round did not consider)."""
        for pending in self._pending.values():
            pending.cancel()
        self._pending.clear()
        self._pool.shutdown(wait=False)
