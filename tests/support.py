"""Small helpers the test modules import by name (conftest modules cannot be imported reliably)."""

from __future__ import annotations

import hashlib

from ledger.core.hashing import sha256_hex
from ledger.store.base import BlobNotFound


def h(label: str) -> str:
    """A placeholder SHA-256 (hex) for contract tests that need distinct hashes."""
    return hashlib.sha256(label.encode()).hexdigest()


class DictStore:
    """An in-memory BlobStore (the protocol's four methods), for judging crafted records."""

    def __init__(self, blobs: dict[str, bytes] | None = None) -> None:
        self.blobs = dict(blobs or {})

    def put(self, data: bytes) -> str:
        self.blobs[sha256_hex(data)] = data
        return sha256_hex(data)

    def put_as(self, name: str, data: bytes) -> None:
        self.blobs[name] = data

    def get(self, name: str) -> bytes:
        if name not in self.blobs:
            raise BlobNotFound(name)
        return self.blobs[name]

    def exists(self, name: str) -> bool:
        return name in self.blobs
