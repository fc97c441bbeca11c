"""`/blobs/<sha256>`: the ledger service's content-addressed blob store over HTTP.

PUT takes a blob only with an upload signature (see `ledger.http_store.blob_upload_message`)
whose signer is, at the moment of the request, a registered node, an aggregator or an auditor
(whose reports the audit page links to) on the chain:
the chain decides who may write, the URL is the bytes' hash, and the body must hash to it.
GET re-hashes the stored bytes and refuses to serve any that no longer match their name.

Errors are JSON `{"error": <HTTP reason>, "detail": <what to do>, ...}` with the offending values
(`signer`, `expected`/`actual`, `limit`) as extra fields. Logs name the uploader's address and the
hash, never a signature or key.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import HTTP_STATUS_CODES

from ledger.api.services import services
from ledger.core.hashing import is_sha256_hex, sha256_hex
from ledger.store.protocol import BLOBS_PATH, CONTENT_HASH_HEADER, MalformedSignature, SIGNATURE_HEADER, recover_upload_signer
from ledger.store.base import BlobNotFound, BlobTooLarge, HashMismatch

log = logging.getLogger(__name__)

blueprint = Blueprint("blobs", __name__)

_ROUTE = BLOBS_PATH + "<path:name>"  # path: so `a/../b` reaches us and gets a clear 400, not a 404
_IMMUTABLE = "public, max-age=31536000, immutable"  # a name can only ever mean one content


def _problem(status: int, detail: str, **fields: Any) -> Response:
    """A JSON error in the same shape as the app's generic HTTP error handler, plus the facts."""
    response = jsonify(error=HTTP_STATUS_CODES.get(status, "Error"), detail=detail, **fields)
    response.status_code = status
    return response


def _bad_name(name: str) -> Response:
    return _problem(400, f"blob names are 64 lowercase hex characters (a SHA-256), got {name!r}")


def _too_large(limit: int, size: int | None = None) -> Response:
    what = f"{size}-byte blob" if size is not None else "blob"
    return _problem(413, f"the {what} is over this store's {limit}-byte limit", limit=limit, size=size)


@blueprint.put(_ROUTE)
def put_blob(name: str) -> Response | tuple[Response, int]:
    """Store the body under `name` if it hashes to `name` and the signer holds a role right now."""
    if not is_sha256_hex(name):
        return _bad_name(name)
    found = services()
    if found.ledger is None:
        return _problem(503, "this service has no ledger configured, so it cannot check who may upload")
    ledger = found.ledger

    signature = request.headers.get(SIGNATURE_HEADER)
    if not signature:
        return _unauthorized(
            f"missing {SIGNATURE_HEADER}: sign blob_upload_message(sha256, {ledger.chain_id}, "
            f"{ledger.address}) with EIP-191 and send it as 0x-hex"
        )
    try:
        signer = recover_upload_signer(signature, name, ledger.chain_id, ledger.address)
    except MalformedSignature as exc:
        return _unauthorized(str(exc))

    # Role checked before the body is read, so strangers cannot make us hash or store anything.
    try:
        allowed = ledger.is_node(signer) or ledger.is_aggregator(signer) or ledger.is_auditor(signer)
    except Exception:  # the RPC can fail in many ways; none of them means "allowed"
        log.exception("cannot check the role of %s for upload of %s", signer, name)
        return _problem(503, "the chain could not be asked whether the signer may upload; retry later")
    if not allowed:
        log.warning("refused upload of %s: signer %s is not a node or aggregator", name, signer)
        return _problem(
            403,
            f"{signer} is not a registered node, an aggregator or an auditor of ledger {ledger.address} on chain "
            f"{ledger.chain_id}; if that is not your address, you signed for another hash, chain or contract",
            signer=signer,
        )

    limit = found.max_blob_bytes
    if request.content_length is not None and request.content_length > limit:
        return _too_large(limit, request.content_length)
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:  # chunked bodies have no Content-Length to check up front
        return _too_large(limit)

    actual = sha256_hex(data)
    if actual != name:
        return _problem(
            422,
            f"the body hashes to {actual}, not to the name {name}: upload the blob under its own SHA-256",
            expected=name,
            actual=actual,
        )

    try:
        found.store.get(name)
        created = False
    except BlobNotFound:
        created = True
    except (HashMismatch, BlobTooLarge) as exc:
        log.warning("stored copy of %s is unusable (%s): replacing it with the upload from %s", name, exc, signer)
        created = True
    if created:
        try:
            found.store.put_as(name, data)
        except BlobTooLarge as exc:
            return _too_large(exc.limit, exc.size)
        log.info("blob %s (%d bytes) uploaded by %s", name, len(data), signer)
    else:
        log.info("blob %s re-uploaded by %s: already present", name, signer)

    response = jsonify(sha256=name, size=len(data), created=created)
    response.headers["Location"] = BLOBS_PATH + name
    return response, 201 if created else 200


def _unauthorized(detail: str) -> Response:
    response = _problem(401, detail)
    response.headers["WWW-Authenticate"] = f'{SIGNATURE_HEADER} realm="fedledger blobs"'
    return response


@blueprint.route(_ROUTE, methods=["GET", "HEAD"])
def get_blob(name: str) -> Response:
    """The blob's bytes, re-hashed before they leave; HEAD answers presence only (like `exists`)."""
    if not is_sha256_hex(name):
        return _bad_name(name)
    store = services().store
    if request.method == "HEAD":
        return _head(store.exists(name), name)
    try:
        data = store.get(name)
    except BlobNotFound:
        return _problem(404, f"no blob {name} in this store", sha256=name)
    except HashMismatch as exc:
        log.error("stored blob %s now hashes to %s: altered at rest, refusing to serve it", name, exc.actual)
        return _problem(
            409,
            f"the stored bytes hash to {exc.actual}, not {name}: the copy was altered at rest; "
            "re-upload the original blob to repair it",
            expected=name,
            actual=exc.actual,
        )
    except BlobTooLarge as exc:
        log.error("stored blob %s is over the store's limit: %s", name, exc)
        return _problem(500, f"the stored copy of {name} is over this store's size limit", limit=exc.limit)
    response = Response(data, mimetype="application/octet-stream")
    response.headers[CONTENT_HASH_HEADER] = name
    response.headers["Cache-Control"] = _IMMUTABLE
    response.set_etag(name)
    return response


def _head(present: bool, name: str) -> Response:
    if not present:
        return _problem(404, f"no blob {name} in this store", sha256=name)
    response = Response(status=200, mimetype="application/octet-stream")
    response.headers[CONTENT_HASH_HEADER] = name
    # Presence was checked without reading the blob, so there is no honest length to announce.
    response.automatically_set_content_length = False
    return response
