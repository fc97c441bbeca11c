"""Small helpers the test modules import by name (conftest modules cannot be imported reliably)."""

from __future__ import annotations

import hashlib
import socket


def h(label: str) -> str:
    """A placeholder SHA-256 (hex) for contract tests that need distinct hashes."""
    return hashlib.sha256(label.encode()).hexdigest()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
