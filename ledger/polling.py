"""The one way fedledger waits: poll a condition at a short interval until a deadline.

Used for chains and servers coming up, processes going away, events arriving and files being
persisted; never a fixed sleep. Kept free of heavy imports so the devnet manager can use it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")

POLL_SECONDS = 0.1


class WaitTimeout(TimeoutError):
    """A condition polled with a deadline never came true."""


def poll_until(condition: Callable[[], T | None], *, timeout: float, interval: float = POLL_SECONDS, what: str) -> T:
    """Return the first truthy value of `condition()`, polling every `interval` up to `timeout` seconds.

    `condition` is always called at least once; exceptions it raises propagate (a dead process
    can end the wait early that way).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise WaitTimeout(f"gave up after {timeout:.1f}s waiting for {what}")
        time.sleep(interval)
