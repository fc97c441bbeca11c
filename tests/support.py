"""Small helpers the test modules import by name (conftest modules cannot be imported reliably)."""

from __future__ import annotations

import hashlib


def h(label: str) -> str:
    """A placeholder SHA-256 (hex) for contract tests that need distinct hashes."""
    return hashlib.sha256(label.encode()).hexdigest()
