"""The HTTP blob store: signed uploads checked against the chain's roles, downloads re-hashed.

Client tests go over real HTTP to the service's server on a free port, with the service's roles read from a
fresh in-process chain (`ledger_chain`); a few Flask test-client tests pin status codes and JSON.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import requests
from flask import Flask, Response

from ledger.api.app import create_app
from ledger.api.server import RunningServer, serve_in_thread
from ledger.api.services import services
from ledger.chain.client import LedgerClient
from ledger.core.hashing import sha256_hex
from ledger.store.protocol import CONTENT_HASH_HEADER, SIGNATURE_HEADER, blob_upload_message, recover_upload_signer, sign_upload
from ledger.store.http import BlobStoreUnavailable, HttpBlobStore, ReadOnlyStore, UploadRefused
from ledger.store.base import BlobNotFound, BlobStore, BlobTooLarge, HashMismatch, InvalidBlobName
from ledger.store.local import LocalBlobStore
from ledger.chain.inprocess import InProcessLedger

LIMIT = 64 * 1024
BLOB = b"an update's canonical safetensors bytes"
BLOB_HASH = sha256_hex(BLOB)
OTHER_CONTRACT = "0x" + "ab" * 20


@dataclass
class Service:
    """The ledger service on a real port, the folder behind it, and the chain it asks."""

    chain: InProcessLedger
    blobs: LocalBlobStore
    server: RunningServer

    @property
    def url(self) -> str:
        return self.server.url

    def store(self, account=None, *, max_bytes: int = LIMIT, **overrides) -> HttpBlobStore:
        options = {"chain_id": self.chain.admin.chain_id, "contract_address": self.chain.address}
        options.update(overrides)
        return HttpBlobStore(self.url, account=account, max_bytes=max_bytes, timeout=10.0, **options)

    def raw_put(self, name: str, body: bytes, signature: str | None) -> requests.Response:
        headers = {SIGNATURE_HEADER: signature} if signature is not None else {}
        return requests.put(f"{self.url}/blobs/{name}", data=body, headers=headers, timeout=10)


def _service_app(chain: InProcessLedger, blobs: LocalBlobStore) -> Flask:
    reader = LedgerClient(chain.w3, chain.address)  # read-only: the service holds no key
    return create_app(store=blobs, ledger=reader, max_blob_bytes=LIMIT)


@pytest.fixture
def service(ledger_chain: InProcessLedger, tmp_path) -> Iterator[Service]:
    blobs = LocalBlobStore(tmp_path / "served", max_bytes=LIMIT)
    with serve_in_thread(_service_app(ledger_chain, blobs)) as server:
        yield Service(chain=ledger_chain, blobs=blobs, server=server)


@pytest.fixture
def node(service: Service):
    return service.chain.nodes[0].account


# ---------------------------------------------------------------- the signed message


def test_upload_message_binds_hash_chain_and_contract() -> None:
    message = blob_upload_message(BLOB_HASH, 31337, OTHER_CONTRACT)

    assert message == (
        "fedledger blob upload\n"
        "chain: 31337\n"
        "contract: 0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB\n"
        f"sha256: {BLOB_HASH}"
    )
    with pytest.raises(InvalidBlobName):
        blob_upload_message(BLOB_HASH.upper(), 31337, OTHER_CONTRACT)


def test_signature_recovers_to_the_signer_only_for_the_same_hash_chain_and_contract(node) -> None:
    signature = sign_upload(node, BLOB_HASH, 31337, OTHER_CONTRACT)

    assert recover_upload_signer(signature, BLOB_HASH, 31337, OTHER_CONTRACT) == node.address
    assert recover_upload_signer(signature, sha256_hex(b"x"), 31337, OTHER_CONTRACT) != node.address
    assert recover_upload_signer(signature, BLOB_HASH, 1, OTHER_CONTRACT) != node.address


# ---------------------------------------------------------------- uploads over HTTP


def test_node_upload_is_stored_and_served_back_identically(service: Service, node) -> None:
    with service.store(node) as uploader, service.store() as reader:
        assert isinstance(uploader, BlobStore)

        name = uploader.put(BLOB)

        assert name == BLOB_HASH
        assert service.blobs.get(name) == BLOB
        assert reader.exists(name)
        assert reader.get(name) == BLOB

    signature = sign_upload(node, BLOB_HASH, service.chain.admin.chain_id, service.chain.address)
    again = service.raw_put(BLOB_HASH, BLOB, signature)
    assert again.status_code == 200
    assert again.json() == {"sha256": BLOB_HASH, "size": len(BLOB), "created": False}


def test_download_carries_the_hash_header_and_octet_stream(service: Service, node) -> None:
    service.store(node).put(BLOB)

    response = requests.get(f"{service.url}/blobs/{BLOB_HASH}", timeout=10)

    assert response.status_code == 200
    assert response.content == BLOB
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers[CONTENT_HASH_HEADER] == BLOB_HASH


def test_aggregator_may_upload(service: Service) -> None:
    aggregator = service.chain.admin.account
    assert service.chain.admin.is_aggregator(aggregator.address)

    assert service.store(aggregator).put(b"global model v1") == sha256_hex(b"global model v1")


def test_upload_and_refusal_are_logged_with_address_and_hash_never_the_key(
    service: Service, node, caplog: pytest.LogCaptureFixture
) -> None:
    stranger = service.chain.new_account("stranger-logged")
    caplog.set_level(logging.INFO, logger="ledger.api.blobs")

    service.store(node).put(BLOB)
    with pytest.raises(UploadRefused):
        service.store(stranger).put(BLOB)

    text = caplog.text
    assert f"{BLOB_HASH} ({len(BLOB)} bytes) uploaded by {node.address}" in text
    assert stranger.address in text
    for secret in (node.key.hex(), stranger.key.hex()):
        assert secret.removeprefix("0x") not in text


def test_unsigned_upload_is_refused_with_401(service: Service, monkeypatch: pytest.MonkeyPatch, node) -> None:
    monkeypatch.setattr("ledger.store.http.sign_upload", lambda *args: "")

    with pytest.raises(UploadRefused) as refused:
        service.store(node).put(BLOB)

    assert refused.value.status == 401
    assert SIGNATURE_HEADER in refused.value.reason
    assert not service.blobs.exists(BLOB_HASH)


def test_malformed_signature_is_refused_with_401(service: Service) -> None:
    for signature in ("0x1234", "0x" + "00" * 65, "not hex at all"):
        response = service.raw_put(BLOB_HASH, BLOB, signature)
        assert response.status_code == 401, signature
        assert response.json()["error"] == "Unauthorized"


def test_stranger_is_refused_with_403_naming_the_address(service: Service) -> None:
    stranger = service.chain.new_account("stranger")

    with pytest.raises(UploadRefused) as refused:
        service.store(stranger).put(BLOB)

    assert refused.value.status == 403
    assert stranger.address in refused.value.reason
    assert not service.blobs.exists(BLOB_HASH)


def test_revoked_node_is_refused_with_403(service: Service, node) -> None:
    uploader = service.store(node)
    uploader.put(b"before revocation")
    service.chain.admin.revoke_node(node.address)

    with pytest.raises(UploadRefused) as refused:
        uploader.put(b"after revocation")

    assert refused.value.status == 403


def test_roles_are_read_once_per_role_change_and_a_revocation_counts_from_its_block(
    ledger_chain: InProcessLedger, tmp_path
) -> None:
    """The service caches a signer's roles while no role event lands: two uploads at one head block
    read the roles once; a revocation is a new block with a NodeRevoked event, so the very next
    upload reads them again and is refused, and a re-registration is honoured just as fast."""
    app = _service_app(ledger_chain, LocalBlobStore(tmp_path / "served", max_bytes=LIMIT))
    book = services(app).roles
    assert book is not None
    node = ledger_chain.nodes[0].account
    with serve_in_thread(app) as server:
        uploader = Service(chain=ledger_chain, blobs=services(app).store, server=server).store(node)  # type: ignore[arg-type]
        uploader.put(b"first upload")
        reads, head = book.reads, ledger_chain.w3.eth.block_number
        uploader.put(b"second upload, same head block")
        assert ledger_chain.w3.eth.block_number == head
        assert book.reads == reads  # answered from the cache

        ledger_chain.admin.revoke_node(node.address)  # one block later
        with pytest.raises(UploadRefused) as refused:
            uploader.put(b"after revocation")
        assert refused.value.status == 403
        assert book.reads == reads + 1

        ledger_chain.admin.register_node(node.address)
        uploader.put(b"after re-registration")
        assert services(app).store.exists(sha256_hex(b"after re-registration"))


def test_signature_over_another_hash_is_refused(service: Service, node) -> None:
    chain_id, contract = service.chain.admin.chain_id, service.chain.address
    signature = sign_upload(node, sha256_hex(b"a different blob"), chain_id, contract)

    response = service.raw_put(BLOB_HASH, BLOB, signature)

    assert response.status_code == 403
    assert response.json()["signer"] != node.address


@pytest.mark.parametrize(
    "override", [{"chain_id": 1}, {"contract_address": OTHER_CONTRACT}], ids=["other-chain", "other-contract"]
)
def test_signature_for_another_federation_is_refused(service: Service, node, override) -> None:
    with pytest.raises(UploadRefused) as refused:
        service.store(node, **override).put(BLOB)

    assert refused.value.status == 403
    assert node.address not in refused.value.reason


def test_body_that_does_not_hash_to_the_name_is_refused_with_422(service: Service, node) -> None:
    chain_id, contract = service.chain.admin.chain_id, service.chain.address

    response = service.raw_put(BLOB_HASH, b"other bytes", sign_upload(node, BLOB_HASH, chain_id, contract))

    assert response.status_code == 422
    assert response.json()["expected"] == BLOB_HASH
    assert response.json()["actual"] == sha256_hex(b"other bytes")
    assert not service.blobs.exists(BLOB_HASH)
    with pytest.raises(HashMismatch):  # the client refuses before sending
        service.store(node).put_as(BLOB_HASH, b"other bytes")


@pytest.mark.parametrize(
    "name",
    ["../x", "../../etc/passwd", BLOB_HASH.upper(), BLOB_HASH[:63], BLOB_HASH + "0", f"{BLOB_HASH[:2]}/{BLOB_HASH}"],
)
def test_names_that_are_not_a_sha256_are_refused_with_400(service: Service, node, name: str) -> None:
    signature = sign_upload(node, BLOB_HASH, service.chain.admin.chain_id, service.chain.address)
    # http.client sends the path verbatim (requests would normalise `..` away before the server saw it).
    connection = http.client.HTTPConnection(service.server.host, service.server.port, timeout=10)
    try:
        for method, body, headers in (("GET", None, {}), ("PUT", BLOB, {SIGNATURE_HEADER: signature})):
            connection.request(method, f"/blobs/{name}", body=body, headers=headers)
            response = connection.getresponse()
            payload = json.loads(response.read())

            assert response.status == 400, (method, name)
            assert repr(name) in payload["detail"]
    finally:
        connection.close()
    assert not service.blobs.exists(BLOB_HASH)
    with pytest.raises(InvalidBlobName):  # the client refuses before any request
        service.store().get(name)


def test_upload_over_the_server_limit_is_refused_with_413(service: Service, node) -> None:
    generous = service.store(node, max_bytes=4 * LIMIT)  # the server's limit, not the client's, applies

    with pytest.raises(BlobTooLarge) as too_large:
        generous.put(b"x" * (LIMIT + 1))

    assert too_large.value.limit == LIMIT
    with pytest.raises(BlobTooLarge):  # far over: refused from the headers, before the body is read
        service.store(node, max_bytes=64 * LIMIT).put(b"y" * (LIMIT + (2 << 20)))


def test_upload_over_the_client_limit_is_refused_locally(service: Service, node) -> None:
    with pytest.raises(BlobTooLarge) as too_large:
        service.store(node, max_bytes=10).put(BLOB)

    assert too_large.value.limit == 10


def test_read_only_store_cannot_upload(service: Service) -> None:
    with pytest.raises(ReadOnlyStore):
        service.store().put(BLOB)


def test_unknown_blob_is_not_found(service: Service) -> None:
    reader = service.store()

    with pytest.raises(BlobNotFound):
        reader.get(BLOB_HASH)
    assert not reader.exists(BLOB_HASH)


def test_blob_altered_on_disk_is_refused_by_server_and_client_then_repaired(service: Service, node) -> None:
    uploader = service.store(node)
    uploader.put(BLOB)
    service.blobs.path_for(BLOB_HASH).write_bytes(b"tampered at rest")

    response = requests.get(f"{service.url}/blobs/{BLOB_HASH}", timeout=10)
    assert response.status_code == 409
    assert response.json()["actual"] == sha256_hex(b"tampered at rest")
    assert response.headers["Content-Type"] == "application/json"  # an error, never the altered bytes
    with pytest.raises(HashMismatch) as mismatch:
        uploader.get(BLOB_HASH)
    assert mismatch.value.actual == sha256_hex(b"tampered at rest")

    uploader.put(BLOB)  # re-uploading the original repairs the copy

    assert uploader.get(BLOB_HASH) == BLOB


def test_server_that_is_down_raises_a_store_error(node) -> None:
    app = Flask("nothing")
    with serve_in_thread(app) as server:
        url = server.url
    store = HttpBlobStore(
        url, account=None, chain_id=1, contract_address=OTHER_CONTRACT, max_bytes=LIMIT, timeout=2, patience=0.5
    )

    with pytest.raises(BlobStoreUnavailable, match="unreachable for"):  # after retrying for its patience
        store.get(BLOB_HASH)
    with pytest.raises(BlobStoreUnavailable, match="does not answer"):  # the fail-fast probe does not retry
        store.check()


# ---------------------------------------------------------------- a hostile server


def _hostile_app(body) -> Flask:
    app = Flask("hostile")

    @app.get("/blobs/<name>")
    def _serve(name: str) -> Response:
        return Response(body, mimetype="application/octet-stream", headers={CONTENT_HASH_HEADER: name})

    return app


def test_client_rehashes_what_a_lying_server_sends() -> None:
    with serve_in_thread(_hostile_app(b"not the blob you asked for")) as server:
        store = HttpBlobStore(
            server.url, account=None, chain_id=1, contract_address=OTHER_CONTRACT, max_bytes=LIMIT, timeout=10
        )
        with pytest.raises(HashMismatch) as mismatch:
            store.get(BLOB_HASH)

    assert mismatch.value.expected == BLOB_HASH
    assert mismatch.value.actual == sha256_hex(b"not the blob you asked for")


def test_client_stops_reading_an_endless_download_at_its_limit() -> None:
    def endless():  # chunked, no Content-Length: only the client's own cap stops it
        for _ in range(4096):
            yield b"z" * 4096

    with serve_in_thread(_hostile_app(endless())) as server:
        store = HttpBlobStore(
            server.url, account=None, chain_id=1, contract_address=OTHER_CONTRACT, max_bytes=LIMIT, timeout=10
        )
        with pytest.raises(BlobTooLarge) as too_large:
            store.get(BLOB_HASH)

    assert too_large.value.limit == LIMIT


# ---------------------------------------------------------------- status codes and JSON (Flask test client)


@pytest.fixture
def test_client(ledger_chain: InProcessLedger, tmp_path):
    app = _service_app(ledger_chain, LocalBlobStore(tmp_path / "blobs", max_bytes=LIMIT))
    return app.test_client()


def test_json_errors_name_the_problem(test_client, ledger_chain: InProcessLedger) -> None:
    node = ledger_chain.nodes[1].account
    signature = sign_upload(node, BLOB_HASH, ledger_chain.admin.chain_id, ledger_chain.address)

    unsigned = test_client.put(f"/blobs/{BLOB_HASH}", data=BLOB)
    oversized = b"x" * (LIMIT + 1)
    too_large = test_client.put(f"/blobs/{BLOB_HASH}", data=oversized, headers={SIGNATURE_HEADER: signature})
    bad_name = test_client.get("/blobs/..%2Fsecrets")
    missing = test_client.get(f"/blobs/{BLOB_HASH}")

    assert unsigned.status_code == 401
    assert unsigned.json["error"] == "Unauthorized"
    assert SIGNATURE_HEADER in unsigned.headers["WWW-Authenticate"]
    assert too_large.status_code == 413
    assert too_large.json["limit"] == LIMIT
    assert bad_name.status_code == 400
    assert "'../secrets'" in bad_name.json["detail"]
    assert missing.status_code == 404
    assert missing.json["sha256"] == BLOB_HASH


def test_put_answers_201_then_200_and_head_reports_presence(test_client, ledger_chain: InProcessLedger) -> None:
    node = ledger_chain.nodes[2].account
    headers = {SIGNATURE_HEADER: sign_upload(node, BLOB_HASH, ledger_chain.admin.chain_id, ledger_chain.address)}

    assert test_client.head(f"/blobs/{BLOB_HASH}").status_code == 404
    first = test_client.put(f"/blobs/{BLOB_HASH}", data=BLOB, headers=headers)
    second = test_client.put(f"/blobs/{BLOB_HASH}", data=BLOB, headers=headers)
    head = test_client.head(f"/blobs/{BLOB_HASH}")

    assert (first.status_code, first.json["created"]) == (201, True)
    assert first.headers["Location"] == f"/blobs/{BLOB_HASH}"
    assert (second.status_code, second.json["created"]) == (200, False)
    assert head.status_code == 200
    assert head.headers[CONTENT_HASH_HEADER] == BLOB_HASH
    assert head.data == b""


def test_service_without_a_ledger_refuses_uploads(tmp_path) -> None:
    app = create_app(store=LocalBlobStore(tmp_path, max_bytes=LIMIT), ledger=None, max_blob_bytes=LIMIT)

    response = app.test_client().put(f"/blobs/{BLOB_HASH}", data=BLOB, headers={SIGNATURE_HEADER: "0x" + "1" * 130})

    assert response.status_code == 503


def test_cli_offers_api_serve() -> None:
    from ledger.api.server import DEFAULT_PORT
    from ledger.cli.main import build_parser

    args = build_parser("api").parse_args(["api", "serve", "--threads", "2"])

    assert (args.host, args.port, args.threads, args.contract) == ("127.0.0.1", DEFAULT_PORT, 2, None)
