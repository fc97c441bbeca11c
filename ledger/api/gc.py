"""Garbage collection of the service's blob folder: blobs no chain event pins, and stale temp files.

Anyone with a role can upload, and an upload is only worth keeping once the chain pins its hash:
as a submitted update (`UpdateSubmitted`), a committed model or its metadata (`ModelCommitted`),
a federation policy (`PolicyChanged`), an auditor's report (`VersionAttested`,
`AttestationResolved`).
A blob still unpinned after a grace period (longer than any upload-to-submit gap) is deleted, as
is a temp file no write has touched for a while (an upload a crash or a cut connection left).
The pinned set is followed incrementally from the chain and re-read just before deleting, so a
hash pinned while a pass runs is kept. Ages come from file modification times: this is a cache's
housekeeping, not a protocol deadline. One blob folder serves one ledger: blobs another ledger
pins look unpinned here.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ledger.chain import events
from ledger.chain.client import LedgerClient
from ledger.store.local import LocalBlobStore

log = logging.getLogger(__name__)

_PINNING_EVENTS = (
    events.UpdateSubmitted.event_name,
    events.ModelCommitted.event_name,
    events.PolicyChanged.event_name,
    events.VersionAttested.event_name,
    events.AttestationResolved.event_name,
)
_NO_HASH = "0" * 64


@dataclass(frozen=True)
class GcPolicy:
    """How old an unpinned blob, or an untouched temp file, must be before it is deleted."""

    grace_seconds: float = 24 * 3600.0
    temp_grace_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if not (self.grace_seconds >= 0 and self.temp_grace_seconds >= 0):  # NaN too: every age would be past it
            raise ValueError(f"grace periods must be non-negative, got {self.grace_seconds}, {self.temp_grace_seconds}")


@dataclass(frozen=True)
class GcReport:
    """One pass: what was deleted, what was kept, and the chain block the pins were read up to."""

    deleted: tuple[str, ...]
    deleted_bytes: int
    temp_files_deleted: int
    kept_pinned: int
    kept_young: int
    pinned_through_block: int


class PinnedHashes:
    """The blob hashes the ledger's events pin, read incrementally (each pass reads only new blocks)."""

    def __init__(self, client: LedgerClient, from_block: int = 0) -> None:
        self.client = client
        self._next_block = from_block
        self._hashes: set[str] = set()
        self._lock = threading.Lock()

    def refresh(self) -> frozenset[str]:
        with self._lock:
            head = int(self.client.w3.eth.block_number)
            if head >= self._next_block:
                found = events.fetch_events(
                    self.client.w3, self.client.address, self._next_block, head, event_names=_PINNING_EVENTS
                )
                for event in found:
                    if isinstance(event, events.UpdateSubmitted):
                        self._hashes.add(event.update_hash)
                    elif isinstance(event, events.ModelCommitted):
                        self._hashes.add(event.model_hash)
                        if event.metadata_hash is not None:
                            self._hashes.add(event.metadata_hash)
                    elif isinstance(event, events.PolicyChanged):
                        self._hashes.add(event.policy_hash)
                    elif isinstance(event, events.VersionAttested):
                        self._hashes.add(event.report_hash)
                    elif isinstance(event, events.AttestationResolved):
                        self._hashes.add(event.resolution_hash)
                self._next_block = head + 1
            return frozenset(self._hashes)

    @property
    def through_block(self) -> int:
        return self._next_block - 1


def collect_garbage(
    store: LocalBlobStore, pinned: PinnedHashes, policy: GcPolicy, *, now: float | None = None
) -> GcReport:
    """Delete the unpinned blobs older than the grace period and the stale temp files; report them."""
    now = time.time() if now is None else now
    hashes = pinned.refresh()
    candidates: list[tuple[str, int]] = []
    kept_pinned = kept_young = temp_deleted = 0
    for stored in store.files():
        age = now - stored.modified
        if stored.name is None:
            if age > policy.temp_grace_seconds:
                stored.path.unlink(missing_ok=True)
                temp_deleted += 1
        elif stored.name in hashes:
            kept_pinned += 1
        elif age <= policy.grace_seconds:
            kept_young += 1
        else:
            candidates.append((stored.name, stored.size))
    hashes = pinned.refresh() if candidates else hashes  # a hash pinned during the scan is kept
    deleted = [(name, size) for name, size in candidates if name not in hashes and store.delete(name)]
    kept_pinned += len(candidates) - len(deleted)
    report = GcReport(
        deleted=tuple(name for name, _ in deleted),
        deleted_bytes=sum(size for _, size in deleted),
        temp_files_deleted=temp_deleted,
        kept_pinned=kept_pinned,
        kept_young=kept_young,
        pinned_through_block=pinned.through_block,
    )
    if deleted or temp_deleted:
        log.info(
            "gc: deleted %d unpinned blobs (%d bytes) and %d stale temp files",
            len(deleted),
            report.deleted_bytes,
            temp_deleted,
        )
    return report


class Collector:
    """Runs `collect_garbage` every `interval_seconds` on a daemon thread until `stop()`."""

    def __init__(self, store: LocalBlobStore, pinned: PinnedHashes, policy: GcPolicy, interval_seconds: float) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"interval_seconds must be positive, got {interval_seconds}")
        self.store, self.pinned, self.policy, self.interval = store, pinned, policy, interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="fedledger-gc", daemon=True)

    def start(self) -> Collector:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                collect_garbage(self.store, self.pinned, self.policy)
            except Exception:  # an RPC or disk hiccup costs one pass, not the service
                log.exception("gc pass failed; retrying in %.0f s", self.interval)
