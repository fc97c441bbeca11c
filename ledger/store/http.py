"""The HTTP blob store's client: uploads signed per the wire protocol, downloads re-hashed.

Downloads are never trusted: `get` streams at most `max_bytes` and re-hashes what it received,
whatever the server claims.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import requests
import urllib3
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address

from ledger.core.hashing import sha256_hex
from ledger.store.base import (
    BlobNotFound,
    BlobStoreError,
    BlobTooLarge,
    HashMismatch,
    InvalidBlobName,
    check_name,
)
from ledger.store.protocol import BLOBS_PATH, SIGNATURE_HEADER, Federation, sign_upload

log = logging.getLogger(__name__)

_CHUNK_BYTES = 1 << 16


class UploadRefused(BlobStoreError):
    """The server would not take an upload: unsigned (401) or not signed by a node/aggregator (403)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"upload refused ({status}): {reason}")
        self.status = status
        self.reason = reason


class QuotaExceeded(BlobStoreError):
    """The server refused an upload because the node has stored its quota of bytes for this round."""

    def __init__(self, quota: int, reason: str) -> None:
        super().__init__(f"upload refused (413): {reason}")
        self.quota = quota
        self.reason = reason


class ReadOnlyStore(BlobStoreError):
    """`put` on a store that holds no signing account."""


class BlobStoreUnavailable(BlobStoreError):
    """The server could not be reached, or answered something this client does not understand."""


class HttpBlobStore:
    """`BlobStore` backed by the ledger service's `/blobs/<sha256>` endpoints.

    With `account=None` the store is read-only. `chain_id` and `contract_address` must be the
    ledger the server checks roles against (`from_ledger` takes them from a `LedgerClient`).
    One `requests.Session` is reused for connection pooling.
    """

    def __init__(
        self,
        base_url: str,
        *,
        account: LocalAccount | None,
        chain_id: int,
        contract_address: str,
        max_bytes: int,
        timeout: float = 60.0,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.base_url = base_url.rstrip("/")
        self.account = account
        self.chain_id = chain_id
        self.contract_address = to_checksum_address(contract_address)
        self.max_bytes = max_bytes
        self.timeout = timeout
        self._session = requests.Session()

    @classmethod
    def from_ledger(
        cls, base_url: str, ledger: Federation, *, account: LocalAccount | None, max_bytes: int, timeout: float = 60.0
    ) -> HttpBlobStore:
        """A store whose uploads are signed for the chain and contract `ledger` talks to."""
        return cls(
            base_url,
            account=account,
            chain_id=ledger.chain_id,
            contract_address=ledger.address,
            max_bytes=max_bytes,
            timeout=timeout,
        )

    def __repr__(self) -> str:  # never the key: only the address
        who = self.account.address if self.account is not None else "read-only"
        return f"HttpBlobStore({self.base_url!r}, {who}, chain {self.chain_id}, {self.contract_address})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> HttpBlobStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def url_for(self, name: str) -> str:
        return f"{self.base_url}{BLOBS_PATH}{check_name(name)}"

    # ------------------------------------------------------------------ BlobStore

    def put(self, data: bytes) -> str:
        name = sha256_hex(data)
        self.put_as(name, data)
        return name

    def put_as(self, name: str, data: bytes) -> None:
        url = self.url_for(name)
        if self.account is None:
            raise ReadOnlyStore(f"{self!r} has no signing account: it cannot upload")
        # Refuse locally what the server would refuse anyway, before sending any bytes.
        if len(data) > self.max_bytes:
            raise BlobTooLarge(len(data), self.max_bytes)
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        signature = sign_upload(self.account, name, self.chain_id, self.contract_address)
        response = self._request(
            "PUT",
            url,
            data=bytes(data),
            headers={SIGNATURE_HEADER: signature, "Content-Type": "application/octet-stream"},
        )
        with response:
            if response.status_code in (200, 201):
                log.debug("uploaded %s (%d bytes) as %s", name, len(data), self.account.address)
                return
            raise self._error(response, name, size=len(data))

    def get(self, name: str) -> bytes:
        url = self.url_for(name)
        # identity: no server-chosen compression, so the size cap counts the bytes that are hashed.
        response = self._request("GET", url, headers={"Accept-Encoding": "identity"})
        with response:
            if response.status_code != 200:
                raise self._error(response, name)
            data = self._read_capped(response, name)
        actual = sha256_hex(data)
        if actual != name:
            raise HashMismatch(expected=name, actual=actual)
        return data

    def exists(self, name: str) -> bool:
        response = self._request("HEAD", self.url_for(name))
        with response:
            if response.status_code == 200:
                return True
            if response.status_code == 404:
                return False
            raise self._error(response, name)

    # ------------------------------------------------------------------ plumbing

    def _request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Always streamed: bodies are read by `_read_capped` / `_json_body`, never whole and unbounded."""
        try:
            return self._session.request(
                method, url, timeout=self.timeout, allow_redirects=False, stream=True, **kwargs
            )
        except requests.RequestException as exc:
            raise BlobStoreUnavailable(f"{method} {url} failed: {exc}") from exc

    def _read_capped(self, response: requests.Response, name: str) -> bytes:
        """At most `max_bytes` of body: a hostile server cannot make the client buffer more."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise BlobTooLarge(int(declared), self.max_bytes)
        received = bytearray()
        try:
            for chunk in response.iter_content(chunk_size=_CHUNK_BYTES):
                received += chunk
                if len(received) > self.max_bytes:
                    raise BlobTooLarge(len(received), self.max_bytes)
        except requests.RequestException as exc:
            raise BlobStoreUnavailable(f"download of {name} broke off: {exc}") from exc
        return bytes(received)

    def _error(self, response: requests.Response, name: str, *, size: int | None = None) -> BlobStoreError:
        """The store exception that matches a non-success answer."""
        status = response.status_code
        body = _json_body(response)
        detail = str(body.get("detail") or response.reason or "no reason given")
        if status == 400:
            return InvalidBlobName(detail)
        if status in (401, 403):
            return UploadRefused(status, detail)
        if status == 404:
            return BlobNotFound(f"no blob {name} at {self.base_url}")
        if status == 409 or status == 422:
            actual = body.get("actual")
            return HashMismatch(expected=name, actual=actual if isinstance(actual, str) else "(not reported)")
        if status == 413 and isinstance(body.get("quota"), int):
            return QuotaExceeded(body["quota"], detail)
        if status == 413:
            limit = body.get("limit")
            size = size if size is not None else -1
            # A proxy's bare 413 names no limit; all we know is that it is below `size`.
            return BlobTooLarge(size, limit if isinstance(limit, int) else max(size - 1, 0))
        return BlobStoreUnavailable(f"{response.request.method} {response.url} answered {status}: {detail}")


def _json_body(response: requests.Response) -> dict[str, Any]:
    """The server's JSON error body, or {} (proxies and hostile servers may send anything)."""
    if "json" not in response.headers.get("Content-Type", ""):
        return {}
    try:
        # An error body is small; cap it so a hostile server cannot stream forever here either.
        body = json.loads(response.raw.read(_CHUNK_BYTES, decode_content=True) or b"{}")
    except (ValueError, OSError, urllib3.exceptions.HTTPError):
        return {}
    return body if isinstance(body, dict) else {}
