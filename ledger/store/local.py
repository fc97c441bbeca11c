"""A content-addressed folder of blobs (`var/blobs/<2 hex>/<64 hex>`), atomic writes, re-hash on read."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from io import RawIOBase
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ledger.core.hashing import is_sha256_hex, sha256_hex
from ledger.store.base import BlobNotFound, BlobTooLarge, ByteSource, HashMismatch, IncompleteBlob, check_name

TEMP_SUFFIX = ".tmp"  # a write in progress (or one a crash left behind): `.<8 hex>-<random>.tmp`
_STREAM_CHUNK = 1 << 16


@dataclass(frozen=True)
class StoredFile:
    """A file in the store's folder: a blob (`name` set) or a temp file (`name` None)."""

    path: Path
    name: str | None
    size: int
    modified: float  # st_mtime, seconds since the epoch


class LocalBlobStore:
    """A folder of blobs at `root/<first 2 hex>/<64 hex>`; writes are atomic and durable.

    Sharding keeps directories small; the temp-file-then-`os.replace` write means readers see
    either no file or the whole file, even if the writer crashes.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        if Path(root).exists() and not Path(root).is_dir():  # else every write would fail later, as a 500
            raise ValueError(f"the blob folder {root} is not a folder")
        self.root = Path(root)
        self.max_bytes = max_bytes

    def path_for(self, name: str) -> Path:
        """Where the blob named `name` lives (whether or not it exists)."""
        check_name(name)
        return self.root / name[:2] / name

    def put(self, data: bytes) -> str:
        name = sha256_hex(data)
        self._write(name, data)
        return name

    def put_as(self, name: str, data: bytes) -> None:
        check_name(name)
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        self._write(name, data)

    def get(self, name: str) -> bytes:
        path = self.path_for(name)
        try:
            with path.open("rb") as blob:
                size = os.fstat(blob.fileno()).st_size
                if size > self.max_bytes:
                    raise BlobTooLarge(size, self.max_bytes)
                # Read one byte past the limit: the file may grow between fstat and read.
                data = blob.read(self.max_bytes + 1)
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {name} under {self.root}") from None
        if len(data) > self.max_bytes:
            raise BlobTooLarge(len(data), self.max_bytes)
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        return data

    def get_buffer(self, name: str, spare: np.ndarray | None = None) -> memoryview:
        """As `get`, read into a private numpy buffer (the view's `.obj`) instead of a new `bytes`.

        For a 100 MB update the fresh memory is most of the read's cost (the kernel faults in and
        zeroes a new `bytes` page by page): a `spare` buffer from an earlier call, once its views
        are no longer used, is read into without allocating anything. The buffer is the caller's
        alone, so the bytes that were hashed are the bytes the caller parses.
        """
        path = self.path_for(name)
        try:
            with path.open("rb", buffering=0) as blob:
                size = os.fstat(blob.fileno()).st_size
                if size > self.max_bytes:
                    raise BlobTooLarge(size, self.max_bytes)
                # One byte more than the file, to notice a file that grew since fstat.
                buffer = spare if spare is not None and _fits(spare, size + 1) else np.empty(size + 1, dtype=np.uint8)
                filled = _read_into(blob, buffer.data[: size + 1])
        except FileNotFoundError:
            raise BlobNotFound(f"no blob {name} under {self.root}") from None
        if filled > size:  # it grew between fstat and read: `get` handles it (and its limit)
            return memoryview(self.get(name))
        data = buffer.data[:filled].toreadonly()
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        return data

    def exists(self, name: str) -> bool:
        return self.path_for(name).is_file()

    def put_stream(self, name: str, source: ByteSource, size: int) -> None:
        """Streams exactly `size` bytes from `source` into a temp file, hashing as they come; the
        blob appears under `name` only if they all arrived and hash to it (see `StreamingBlobStore`).

        Memory stays at one 64 KiB chunk whatever the size, so an upload is never held whole.
        """
        check_name(name)
        if size < 0:
            raise ValueError(f"size must be non-negative, got {size}")
        if size > self.max_bytes:
            raise BlobTooLarge(size, self.max_bytes)
        with self._atomic_write(name) as out:
            digest = hashlib.sha256()
            received = 0
            while received < size:
                chunk = source.read(min(_STREAM_CHUNK, size - received))
                if not chunk:
                    raise IncompleteBlob(size, received)
                received += len(chunk)
                digest.update(chunk)
                out.write(chunk)
            actual = digest.hexdigest()
            if actual != name:
                raise HashMismatch(expected=name, actual=actual)

    def files(self) -> Iterator[StoredFile]:
        """Every blob and temp file under the root (for garbage collection); other files are ignored."""
        if not self.root.is_dir():
            return
        for shard in sorted(self.root.iterdir()):
            if not (shard.is_dir() and len(shard.name) == 2):
                continue
            for path in sorted(shard.iterdir()):
                name = path.name if is_sha256_hex(path.name) and path.name[:2] == shard.name else None
                if name is None and not (path.name.startswith(".") and path.name.endswith(TEMP_SUFFIX)):
                    continue
                try:
                    status = path.stat()
                except FileNotFoundError:  # renamed or removed meanwhile
                    continue
                yield StoredFile(path=path, name=name, size=status.st_size, modified=status.st_mtime)

    def delete(self, name: str) -> bool:
        """Removes the blob named `name`; False if there was none."""
        try:
            self.path_for(name).unlink()
        except FileNotFoundError:
            return False
        return True

    def _write(self, name: str, data: bytes) -> None:
        """Atomically (re)writes the blob; rewriting an existing name also repairs a damaged copy."""
        if len(data) > self.max_bytes:
            raise BlobTooLarge(len(data), self.max_bytes)
        with self._atomic_write(name) as out:
            out.write(data)

    @contextlib.contextmanager
    def _atomic_write(self, name: str) -> Iterator[BinaryIO]:
        """A temp file beside the blob's path: renamed over it, durably, if the block completes;
        removed if it raises (anything, including a client that went away mid-upload)."""
        path = self.path_for(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{name[:8]}-", suffix=TEMP_SUFFIX, dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as tmp:
                os.fchmod(tmp.fileno(), 0o644)
                yield tmp
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        _fsync_dir(path.parent)


def _fits(spare: np.ndarray | None, size: int) -> bool:
    """Whether `spare` can be read into: a flat, writable, contiguous uint8 array of `size` or more."""
    return (
        spare is not None
        and spare.dtype == np.uint8
        and spare.ndim == 1
        and spare.flags.c_contiguous
        and spare.flags.writeable
        and spare.size >= size
    )


def _read_into(blob: RawIOBase, buffer: memoryview) -> int:
    """Fills `buffer` from `blob` until it is full or the file ends; returns the bytes read."""
    filled = 0
    while filled < len(buffer):
        count = blob.readinto(buffer[filled:])
        if not count:
            break
        filled += count
    return filled


def _fsync_dir(directory: Path) -> None:
    """Makes the rename itself durable (POSIX); a no-op where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
