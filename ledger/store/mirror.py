"""A store of one's own, filled from another on first read: what an independent auditor keeps.

Reads come from the local copy when it holds the blob intact, else from the source; bytes from
the source are re-hashed before they are kept, so the copy never holds what the source altered.
Writes (an auditor's own reports) go to the local copy only: the source is someone else's.
"""

from __future__ import annotations

from ledger.core.hashing import sha256_hex
from ledger.store.base import BlobNotFound, BlobStore, HashMismatch, check_name
from ledger.store.local import LocalBlobStore


class MirroredStore:
    """`own` first, then `source`; what `source` serves intact is copied into `own`."""

    def __init__(self, own: LocalBlobStore, source: BlobStore) -> None:
        self.own = own
        self.source = source

    def put(self, data: bytes) -> str:
        return self.own.put(data)

    def put_as(self, name: str, data: bytes) -> None:
        self.own.put_as(name, data)

    def get(self, name: str) -> bytes:
        check_name(name)
        try:
            return self.own.get(name)
        except (BlobNotFound, HashMismatch):  # not copied yet, or the copy was altered at rest
            pass
        data = self.source.get(name)  # its own errors (missing, altered, too large) are the answer
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        self.own.put_as(name, data)
        return data

    def exists(self, name: str) -> bool:
        return self.own.exists(name) or self.source.exists(name)
