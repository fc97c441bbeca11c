"""`/blobs/<sha256>`: the ledger service's content-addressed blob store over HTTP.

PUT takes a blob only with an upload signature (see `ledger.store.protocol.blob_upload_message`)
whose signer is, at a head block read after the request arrived (`ledger.api.roles`: roles are
read again after every role event, so a revocation counts from its block), a registered node, an
aggregator or an auditor (whose reports the audit page links to) on the chain: the chain decides who may write, the URL is
the bytes' hash, and the body must hash to it. A node may store at most its quota per round
(`ledger.api.quota`), with at most two uploads in flight.
GET re-hashes the stored bytes and refuses to serve any that no longer match their name.

Errors are JSON `{"error": <HTTP reason>, "detail": <what to do>, ...}` with the offending values
(`signer`, `expected`/`actual`, `limit`) as extra fields. Logs name the uploader's address and the
hash, never a signature or key.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, jsonify, request
from werkzeug.exceptions import ClientDisconnected
from werkzeug.http import HTTP_STATUS_CODES

from ledger.api.quota import QuotaRefusal
from ledger.api.services import services
from ledger.core.hashing import is_sha256_hex
from ledger.store.base import BlobNotFound, BlobStore, BlobTooLarge, HashMismatch, IncompleteBlob, StreamingBlobStore
from ledger.store.protocol import BLOBS_PATH, CONTENT_HASH_HEADER, SIGNATURE_HEADER, MalformedSignature, recover_upload_signer

log = logging.getLogger(__name__)

blueprint = Blueprint("blobs", __name__)

_ROUTE = BLOBS_PATH + "<path:name>"  # path: so `a/../b` reaches us and gets a clear 400, not a 404
_IMMUTABLE = "public, max-age=31536000, immutable"  # a name can only ever mean one content
_CHALLENGE = f'{SIGNATURE_HEADER} realm="fedledger blobs"'


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


@dataclass(frozen=True)
class Refusal:
    """An upload refused from its headers alone: status, JSON body, extra response headers."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str]


def header_refusal(
    *, content_length: int | None, chunked: bool, signature: str | None, limit: int, chain_id: int, contract: str
) -> Refusal | None:
    """The refusals that need neither crypto nor the chain: no size (411), too large (413), unsigned
    (401). Pure, so the server can answer them on its event loop before the app is even called
    (`ledger.api.server`), and the app answers them the same way under any WSGI server."""
    if content_length is None or chunked:
        detail = "uploads need a Content-Length header (no chunked encoding): the size is checked first"
        return Refusal(411, {"error": HTTP_STATUS_CODES[411], "detail": detail}, {})
    if content_length > limit:
        detail = f"the {content_length}-byte blob is over this store's {limit}-byte limit"
        return Refusal(413, {"error": HTTP_STATUS_CODES[413], "detail": detail, "limit": limit, "size": content_length}, {})
    if not signature:
        detail = (
            f"missing {SIGNATURE_HEADER}: sign blob_upload_message(sha256, {chain_id}, {contract}) with EIP-191 "
            "and send it as 0x-hex"
        )
        return Refusal(401, {"error": HTTP_STATUS_CODES[401], "detail": detail}, {"WWW-Authenticate": _CHALLENGE})
    return None


@blueprint.put(_ROUTE)
def put_blob(name: str) -> Response | tuple[Response, int]:
    """Store the body under `name` if it hashes to `name` and the signer holds a role right now.

    Everything is decided from the headers before the first body byte is read (the server does
    not read it until the app asks): name, size, signature, role, quota. Only then is the body
    streamed to a temp file, hashed on the way, and renamed into place.
    """
    if not is_sha256_hex(name):
        return _bad_name(name)
    found = services()
    if found.ledger is None:
        return _problem(503, "this service has no ledger configured, so it cannot check who may upload")
    ledger = found.ledger

    refused = header_refusal(
        content_length=request.content_length,
        chunked="chunked" in request.headers.get("Transfer-Encoding", "").lower(),
        signature=request.headers.get(SIGNATURE_HEADER),
        limit=found.max_blob_bytes,
        chain_id=ledger.chain_id,
        contract=ledger.address,
    )
    if refused is not None:
        response = jsonify(refused.body)
        response.status_code = refused.status
        response.headers.update(refused.headers)
        return response
    size, signature = request.content_length, request.headers[SIGNATURE_HEADER]
    assert size is not None
    try:
        signer = _recover_signer(signature, name, ledger.chain_id, ledger.address)
    except MalformedSignature as exc:
        return _unauthorized(str(exc))

    # Role checked before the body is read, so strangers cannot make us hash or store anything.
    assert found.roles is not None  # the app makes one whenever it has a ledger
    try:
        standing = found.roles.standing(signer)  # the chain's head now; roles re-read after any role event
    except Exception:  # the RPC can fail in many ways; none of them means "allowed"
        log.exception("cannot check the role of %s for upload of %s", signer, name)
        return _problem(503, "the chain could not be asked whether the signer may upload; retry later")
    is_node, round_number = standing.is_node, standing.round
    if not standing.may_upload:
        log.warning("refused upload of %s: signer %s is not a node or aggregator", name, signer)
        return _problem(
            403,
            f"{signer} is not a registered node, an aggregator or an auditor of ledger {ledger.address} on chain "
            f"{ledger.chain_id}; if that is not your address, you signed for another hash, chain or contract",
            signer=signer,
        )

    created = not _intact(found.store, name)  # a repeat stores nothing new: it costs no quota
    admitted = found.uploads.reserve(signer, round_number, size, counted=is_node and created)
    if isinstance(admitted, QuotaRefusal):
        log.warning("refused upload of %s by %s: %s", name, signer, admitted.detail)
        return _problem(admitted.status, admitted.detail, signer=signer, **{admitted.field: admitted.limit})
    stored = False
    try:
        _receive_body(found.store, name, size)
        stored = created
    except HashMismatch as exc:
        return _problem(
            422,
            f"the body hashes to {exc.actual}, not to the name {name}: upload the blob under its own SHA-256",
            expected=name,
            actual=exc.actual,
        )
    except (IncompleteBlob, ClientDisconnected) as exc:
        log.info("upload of %s by %s broke off: %s", name, signer, exc)
        return _problem(400, f"the body ended before its {size} declared bytes arrived", size=size)
    except BlobTooLarge as exc:
        return _too_large(exc.limit, exc.size)
    finally:
        found.uploads.release(admitted, stored=stored)
    if created:
        log.info("blob %s (%d bytes) uploaded by %s", name, size, signer)
    else:
        log.info("blob %s re-uploaded by %s: already present", name, signer)

    response = jsonify(sha256=name, size=size, created=created)
    response.headers["Location"] = BLOBS_PATH + name
    return response, 201 if created else 200


@functools.lru_cache(maxsize=4096)
def _recover_signer(signature: str, name: str, chain_id: int, contract: str) -> str:
    """`recover_upload_signer`, memoized: a pure function of its arguments, and the costliest check."""
    return recover_upload_signer(signature, name, chain_id, contract)


def _intact(store: BlobStore, name: str) -> bool:
    """Whether the store already holds an unaltered copy (a damaged one is replaced by the upload)."""
    try:
        store.get(name)
    except BlobNotFound:
        return False
    except (HashMismatch, BlobTooLarge) as exc:
        log.warning("stored copy of %s is unusable (%s): replacing it with the upload", name, exc)
        return False
    return True


def _receive_body(store: BlobStore, name: str, size: int) -> None:
    """The request body into the store: streamed when the store can take a stream, else read whole
    (never more than the declared size, which is already within the limit)."""
    if isinstance(store, StreamingBlobStore):
        store.put_stream(name, request.stream, size)
        return
    data = request.stream.read(size)
    if len(data) != size:
        raise IncompleteBlob(size, len(data))
    store.put_as(name, data)


def _unauthorized(detail: str) -> Response:
    response = _problem(401, detail)
    response.headers["WWW-Authenticate"] = _CHALLENGE
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
