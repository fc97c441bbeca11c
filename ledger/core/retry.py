"""Riding out outages: retry an idempotent action with backoff, say so once, give up after a patience.

The chain's JSON-RPC provider and the HTTP blob store's client both wrap their requests in
`retry_patiently`, so every long-running role (edge node, aggregator, indexer, API) survives the
chain or the store going away for less than its patience, and then stops with `Unavailable`
(exit code 3) instead of a traceback. Only transport failures are retried, never refusals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ledger.core.errors import Unavailable

T = TypeVar("T")

DEFAULT_PATIENCE_SECONDS = 120.0


@dataclass(frozen=True)
class Backoff:
    """Delays between attempts: `first`, doubling up to `longest`, for at most `patience` seconds."""

    patience: float = DEFAULT_PATIENCE_SECONDS
    first: float = 0.2
    longest: float = 5.0

    def delay(self, attempt: int) -> float:
        return min(self.first * 2.0**attempt, self.longest)


def retry_patiently(
    action: Callable[[], T],
    *,
    retry_on: tuple[type[BaseException], ...],
    what: str,
    backoff: Backoff,
    log: logging.Logger,
    unavailable: type[Unavailable] = Unavailable,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`action()`, retried while it raises one of `retry_on`; `unavailable` once `backoff.patience` is spent.

    The first failure is logged once as a warning (with how long we keep trying), the recovery
    once as info; the attempts in between are silent.
    """
    started: float | None = None
    attempt = 0
    while True:
        try:
            value = action()
        except retry_on as exc:
            now = clock()
            if started is None:
                started = now
                if backoff.patience > 0:
                    log.warning("%s unreachable (%s); retrying for up to %.0f s", what, brief_error(exc), backoff.patience)
            waited = now - started
            if waited >= backoff.patience:
                raise unavailable(f"{what} unreachable for {waited:.0f} s ({brief_error(exc)}); giving up") from exc
            sleep(min(backoff.delay(attempt), max(backoff.patience - waited, 0.0)))
            attempt += 1
            continue
        if started is not None:
            log.warning("%s reachable again after %.1f s", what, clock() - started)
        return value


def brief_error(exc: BaseException) -> str:
    """The exception in one short line (requests' messages nest the whole urllib3 chain)."""
    text = " ".join(str(exc).split())
    for marker in ("Connection refused", "Read timed out", "Connection reset", "Connection aborted", "Name or service not known"):
        if marker in text:
            return f"{type(exc).__name__}: {marker}"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__
