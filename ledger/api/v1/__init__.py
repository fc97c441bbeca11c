"""`/api/v1`: the audit API over the SQL index, JSON only; one blueprint per area.

Everything here but `/verify`, `/export` and the attestations reads the index (`ledger.index`),
which mirrors the chain: answers are as fresh as the indexer (see `/api/v1/summary` for how far it
got), and each is compared with the chain's events before it is served (`checked`). `/verify`
re-derives from the chain and the blob store, and so does `/export` (a version's unsigned export
folder as a tar); attestations are read from the chain itself. `/api/v1/openapi.json` describes it all.
"""

from __future__ import annotations

from flask import Flask

PREFIX = "/api/v1"


def register(app: Flask) -> None:
    from ledger.api.v1 import attestations, export, models, nodes, openapi, privacy, rounds, summary, updates, verify

    for module in (summary, rounds, models, updates, nodes, privacy, verify, export, attestations, openapi):
        app.register_blueprint(module.blueprint, url_prefix=PREFIX)
