"""The local content-addressed store: names are hashes, writes are atomic, reads are re-hashed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ledger.core.hashing import sha256_hex
from ledger.store.base import BlobNotFound, BlobStore, BlobTooLarge, BufferedBlobStore, HashMismatch, InvalidBlobName
from ledger.store.local import LocalBlobStore

BLOB = b"model bytes"
BLOB_HASH = sha256_hex(BLOB)


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs", max_bytes=1024)


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_put_names_the_blob_by_its_sha256_in_a_sharded_folder(store: LocalBlobStore) -> None:
    name = store.put(BLOB)

    assert name == BLOB_HASH
    assert _files(store.root) == [f"{BLOB_HASH[:2]}/{BLOB_HASH}"]
    assert store.get(name) == BLOB
    assert store.exists(name)
    assert isinstance(store, BlobStore)


def test_putting_the_same_bytes_twice_keeps_one_file(store: LocalBlobStore) -> None:
    store.put(BLOB)
    store.put_as(BLOB_HASH, BLOB)

    assert _files(store.root) == [f"{BLOB_HASH[:2]}/{BLOB_HASH}"]


def test_failed_write_leaves_neither_blob_nor_temp_file(
    store: LocalBlobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)

    with pytest.raises(OSError, match="disk gone"):
        store.put(BLOB)
    assert _files(store.root) == []
    assert not store.exists(BLOB_HASH)


def test_put_as_refuses_bytes_whose_hash_differs_from_the_name(store: LocalBlobStore) -> None:
    with pytest.raises(HashMismatch) as caught:
        store.put_as(sha256_hex(b"something else"), BLOB)

    assert caught.value.actual == BLOB_HASH
    assert _files(store.root) == []


def test_file_altered_on_disk_fails_the_read(store: LocalBlobStore) -> None:
    name = store.put(BLOB)
    store.path_for(name).write_bytes(b"model bytez")

    with pytest.raises(HashMismatch) as caught:
        store.get(name)

    assert (caught.value.expected, caught.value.actual) == (name, sha256_hex(b"model bytez"))


def test_missing_blob_is_not_found(store: LocalBlobStore) -> None:
    assert not store.exists(BLOB_HASH)
    with pytest.raises(BlobNotFound):
        store.get(BLOB_HASH)


@pytest.mark.parametrize(
    "name",
    [
        "../" + BLOB_HASH[3:],
        "/etc/passwd",
        BLOB_HASH.upper(),
        "0x" + BLOB_HASH,
        BLOB_HASH[:-1],
        BLOB_HASH + "0",
        "",
        "..",
        None,
    ],
)
def test_names_that_are_not_canonical_hashes_are_refused(store: LocalBlobStore, name: object) -> None:
    for call in (store.get, store.exists, store.path_for, lambda n: store.put_as(n, BLOB)):
        with pytest.raises(InvalidBlobName):
            call(name)


def test_blobs_over_the_limit_are_refused_on_write_and_read(store: LocalBlobStore) -> None:
    big = b"x" * 1025
    with pytest.raises(BlobTooLarge, match="1025 bytes"):
        store.put(big)

    path = store.path_for(sha256_hex(big))
    path.parent.mkdir(parents=True)
    path.write_bytes(big)  # planted behind the store's back
    with pytest.raises(BlobTooLarge):
        store.get(sha256_hex(big))


def test_exactly_the_limit_is_accepted(store: LocalBlobStore) -> None:
    blob = b"y" * 1024

    assert store.get(store.put(blob)) == blob


# ---------------------------------------------------------------------------------- get_buffer


def test_get_buffer_gives_gets_bytes_read_only(store: LocalBlobStore) -> None:
    name = store.put(BLOB)

    buffer = store.get_buffer(name)

    assert isinstance(store, BufferedBlobStore)
    assert buffer == BLOB == store.get(name)
    assert buffer.readonly


def test_get_buffer_refuses_what_get_refuses(store: LocalBlobStore) -> None:
    altered = store.put(BLOB)
    store.path_for(altered).write_bytes(b"model bytez")
    big = b"x" * 1025
    oversized = sha256_hex(big)
    store.path_for(oversized).parent.mkdir(parents=True, exist_ok=True)
    store.path_for(oversized).write_bytes(big)  # planted behind the store's back

    with pytest.raises(HashMismatch):
        store.get_buffer(altered)
    with pytest.raises(BlobNotFound):
        store.get_buffer(sha256_hex(b"never stored"))
    with pytest.raises(BlobTooLarge):
        store.get_buffer(oversized)
    with pytest.raises(InvalidBlobName):
        store.get_buffer("../" + BLOB_HASH[3:])


def test_get_buffer_of_an_empty_blob(store: LocalBlobStore) -> None:
    assert store.get_buffer(store.put(b"")) == b""


def test_get_buffer_reads_into_a_spare_that_fits_and_allocates_otherwise(store: LocalBlobStore) -> None:
    name = store.put(BLOB)
    roomy = np.full(64, 0xFF, dtype=np.uint8)
    tight = np.zeros(len(BLOB), dtype=np.uint8)  # one byte short: the read needs one to spare

    into_roomy = store.get_buffer(name, roomy)
    into_tight = store.get_buffer(name, tight)

    assert into_roomy.obj is roomy and into_roomy == BLOB
    assert into_tight.obj is not tight and into_tight == BLOB


def test_a_blob_folder_that_is_a_file_is_refused_at_once(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    with pytest.raises(ValueError, match="is not a folder"):
        LocalBlobStore(tmp_path / "afile", max_bytes=1024)
