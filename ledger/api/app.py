"""`create_app(config)`: the ledger service's Flask app, one blueprint per area.

The app holds its collaborators in `app.extensions["fedledger"]` (a `Services` object, see
`ledger.api.services`): the blob store and a read-only ledger client. Tests build the app with their own (temp store,
in-process chain) through the same factory.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from ledger.api.quota import UploadQuota
from ledger.api.roles import RoleBook
from ledger.api.services import Services
from ledger.chain.client import LedgerClient
from ledger.chain.mirror import ChainMirror
from ledger.index.consistency import MetadataReader
from ledger.store.base import BlobStore

def create_app(
    *,
    store: BlobStore,
    ledger: LedgerClient | None,
    max_blob_bytes: int,
    config: dict[str, Any] | None = None,
    database_url: str | None = None,
    index_sessions: sessionmaker[Session] | None = None,
    ledger_from_block: int = 0,
    node_quota_bytes: int | None = None,
) -> Flask:
    """`database_url` (or ready `index_sessions`) serves the audit API from the SQL index; the URL's
    schema is checked first (`SchemaOutOfDate`: run `fedledger db upgrade`). With a `ledger`, every
    answer from the index is first compared with the chain's events from `ledger_from_block` on.
    A node may store `node_quota_bytes` per round (default: twice `max_blob_bytes`, a full-size
    update and a retry)."""
    owned_engine = None
    if database_url is not None and index_sessions is None:
        from ledger.index.db import open_index

        owned_engine, index_sessions = open_index(database_url)
    app = Flask("fedledger")
    # An engine the app opened itself: whoever retires the app disposes it (closes its pool).
    app.extensions["fedledger_index_engine"] = owned_engine
    app.config.update(MAX_CONTENT_LENGTH=max_blob_bytes, JSON_SORT_KEYS=False)
    if config:
        app.config.update(config)
    mirror = ChainMirror(ledger.w3, ledger.address, from_block=ledger_from_block) if ledger is not None else None
    quota = UploadQuota(node_round_bytes=node_quota_bytes or 2 * max_blob_bytes)
    app.extensions["fedledger"] = Services(
        store=store,
        ledger=ledger,
        max_blob_bytes=max_blob_bytes,
        uploads=quota,
        mirror=mirror,
        metadata=MetadataReader(store),
        roles=RoleBook(ledger, mirror) if ledger is not None and mirror is not None else None,
    )

    from ledger.api.blobs import blueprint as blobs_blueprint

    app.register_blueprint(blobs_blueprint)

    from ledger.api.page import blueprint as page_blueprint

    app.register_blueprint(page_blueprint)

    from ledger.api import db, v1

    db.init_app(app, index_sessions)
    v1.register(app)

    @app.errorhandler(HTTPException)
    def _json_error(exc: HTTPException) -> Response:
        response = jsonify(error=exc.name, detail=exc.description)
        response.status_code = exc.code or 500
        return response

    return app
