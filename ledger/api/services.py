"""What every blueprint of the ledger service shares: the blob store, a read-only ledger client, upload
quotas, the chain's events."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, current_app

from ledger.api.quota import UploadQuota
from ledger.api.roles import RoleBook
from ledger.chain.client import LedgerClient
from ledger.chain.mirror import ChainMirror
from ledger.index.consistency import MetadataReader
from ledger.store.base import BlobStore


@dataclass
class Services:
    store: BlobStore
    ledger: LedgerClient | None
    max_blob_bytes: int
    uploads: UploadQuota
    mirror: ChainMirror | None = None  # the chain's events, which index answers are checked against
    metadata: MetadataReader | None = None  # metadata blobs, which the rows taken from them are checked against
    roles: RoleBook | None = None  # who may upload, per head block (with a ledger)


def services(app: Flask | None = None) -> Services:
    """The running app's services (set by `create_app`)."""
    found: Services = (app or current_app).extensions["fedledger"]
    return found
