"""What every blob store is: blobs named by their SHA-256, re-hashed on every read; and its errors.

A store is a cache of what the chain pins, never trusted on its own: it refuses bytes whose hash
is not their name, and `get` re-hashes what it read, so a file altered on disk (or in transit,
for remote stores) is caught before anyone deserializes it.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from ledger.core.hashing import is_sha256_hex


class BlobStoreError(Exception):
    """Base class of the store's errors."""


class InvalidBlobName(BlobStoreError, ValueError):
    """A name that is not 64 lowercase hex characters (so it can never name a path elsewhere)."""


class BlobNotFound(BlobStoreError, LookupError):
    """No blob with this hash in the store."""


class BlobTooLarge(BlobStoreError):
    """A blob over the store's size limit."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"blob is {size} bytes, over the store's {limit}-byte limit")
        self.size = size
        self.limit = limit


class IncompleteBlob(BlobStoreError):
    """A streamed blob that ended before its declared size (the sender stopped or was cut off)."""

    def __init__(self, size: int, received: int) -> None:
        super().__init__(f"the blob ended after {received} of its {size} declared bytes")
        self.size = size
        self.received = received


class HashMismatch(BlobStoreError):
    """Bytes whose SHA-256 is not the name they were stored or fetched under."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"bytes hash to {actual}, not {expected}: refusing them (altered or wrong blob)")
        self.expected = expected
        self.actual = actual


@runtime_checkable
class BlobStore(Protocol):
    """What edge nodes and the aggregator need from any store (local folder, HTTP, S3)."""

    def put(self, data: bytes) -> str:
        """Stores `data` and returns its SHA-256 hex, the name it is stored under."""
        ...

    def put_as(self, name: str, data: bytes) -> None:
        """Stores `data` under `name`; `HashMismatch` if `name` is not the bytes' SHA-256."""
        ...

    def get(self, name: str) -> bytes:
        """The bytes named `name`, re-hashed: `HashMismatch` if altered, `BlobNotFound` if absent."""
        ...

    def exists(self, name: str) -> bool:
        """Whether a blob named `name` is present (its integrity is checked only by `get`)."""
        ...


@runtime_checkable
class BufferedBlobStore(BlobStore, Protocol):
    """A store that can also hand out a blob in a private buffer, for large blobs parsed in place."""

    def get_buffer(self, name: str, spare: np.ndarray | None = None) -> memoryview:
        """As `get` (same checks and errors), as a read-only view of a private buffer (`view.obj`).

        `spare`, a uint8 array from an earlier call whose views the caller no longer uses, is
        read into when it is large enough, so nothing is allocated.
        """
        ...


class ByteSource(Protocol):
    """Where a streamed blob is read from: a file, a socket's request body (`read(n)` → ≤ n bytes)."""

    def read(self, size: int, /) -> bytes: ...


@runtime_checkable
class StreamingBlobStore(BlobStore, Protocol):
    """A store that can take a blob of known size from a stream without holding it in memory."""

    def put_stream(self, name: str, source: ByteSource, size: int) -> None:
        """Stores exactly `size` bytes read from `source` under `name`, all or nothing.

        `BlobTooLarge` (before reading) over the limit, `IncompleteBlob` if the source ends
        early, `HashMismatch` if the bytes do not hash to `name`; nothing is left behind on any
        failure, and whatever `source.read` raises propagates after the same clean-up.
        """
        ...


def check_name(name: object) -> str:
    """`name` if it is a canonical SHA-256 hex digest, else `InvalidBlobName`."""
    if not is_sha256_hex(name):
        raise InvalidBlobName(f"blob names are 64 lowercase hex characters, got {name!r}")
    return name
