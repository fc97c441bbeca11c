"""The one way fedledger waits: poll a condition at a short interval until a deadline; free ports.

Used for chains and servers coming up, processes going away, events arriving and files being
persisted; never a fixed sleep. Kept free of heavy imports so the devnet manager can use it.
"""

from __future__ import annotations

import socket
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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_for_port(host: str, port: int, *, timeout: float, interval: float = 0.05) -> None:
    """Poll until a TCP connection to host:port succeeds; `WaitTimeout` after `timeout` seconds."""

    def accepts() -> bool:
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return True
        except OSError:
            return False

    poll_until(accepts, timeout=timeout, interval=interval, what=f"connections on {host}:{port}")
