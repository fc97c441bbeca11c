"""Upload quotas: how many bytes a node may store per round, and how many uploads it may have in flight.

A registered node needs one update per round (and perhaps a retry); without a bound one node could
fill the disk between two rounds. Bytes are reserved from the declared Content-Length before the
body is read and refunded unless a new blob was stored, so a refused, broken or repeated upload
costs nothing. Aggregators (who store each round's model and metadata) have no byte quota but
the same in-flight limit. The counts live in this process: a restart starts every node afresh,
which bounds the loss to one quota per node per restart.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Reservation:
    """An upload admitted by `UploadQuota.reserve`; hand it back to `release` whatever happens."""

    signer: str
    round: int
    size: int
    counted: bool  # whether its bytes count against the round quota


@dataclass(frozen=True)
class QuotaRefusal:
    """Why an upload was not admitted: HTTP status, what to do, and the limit by its JSON field name
    (413 with `quota`: the round's bytes are spent; 429 with `in_flight`: retry shortly)."""

    status: int
    detail: str
    field: str
    limit: int


class UploadQuota:
    """Per-node bytes per round and per-signer uploads in flight; thread-safe."""

    def __init__(self, *, node_round_bytes: int, max_in_flight: int = 2) -> None:
        if node_round_bytes < 1 or max_in_flight < 1:
            raise ValueError(f"quota and in-flight limit must be positive, got {node_round_bytes}, {max_in_flight}")
        self.node_round_bytes = node_round_bytes
        self.max_in_flight = max_in_flight
        self._used: dict[tuple[str, int], int] = {}
        self._in_flight: Counter[str] = Counter()
        self._lock = threading.Lock()

    def used(self, signer: str, round_number: int) -> int:
        with self._lock:
            return self._used.get((signer, round_number), 0)

    def reserve(self, signer: str, round_number: int, size: int, *, counted: bool) -> Reservation | QuotaRefusal:
        """Admit an upload of `size` bytes by `signer` during `round_number`, or say why not."""
        with self._lock:
            if self._in_flight[signer] >= self.max_in_flight:
                return QuotaRefusal(
                    429,
                    f"{signer} already has {self.max_in_flight} uploads in flight; retry when one has finished",
                    "in_flight",
                    self.max_in_flight,
                )
            key = (signer, round_number)
            used = self._used.get(key, 0)
            if counted and used + size > self.node_round_bytes:
                return QuotaRefusal(
                    413,
                    f"{signer} has stored {used} bytes in round {round_number}; {size} more would pass the "
                    f"{self.node_round_bytes}-byte quota per node and round",
                    "quota",
                    self.node_round_bytes,
                )
            self._in_flight[signer] += 1
            if counted:
                self._used[key] = used + size
                # Earlier rounds' counts are of no further use: keep memory bounded by the signers.
                for stale in [k for k in self._used if k[0] == signer and k[1] < round_number]:
                    del self._used[stale]
            return Reservation(signer, round_number, size, counted)

    def release(self, reservation: Reservation, *, stored: bool) -> None:
        """The upload is over; its bytes stay counted only if it stored a new blob."""
        with self._lock:
            self._in_flight[reservation.signer] -= 1
            if not self._in_flight[reservation.signer]:
                del self._in_flight[reservation.signer]
            key = (reservation.signer, reservation.round)
            if reservation.counted and not stored and key in self._used:
                self._used[key] -= reservation.size
